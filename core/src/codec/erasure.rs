//! Reed–Solomon coding of sealed segments into stripes of content-addressed shards.

use bytes::Bytes;
use reed_solomon_simd::rate::{DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder};

use super::layout::shard_len;
use super::{Error, Params, ShardId, VerifiedShard};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd128::Simd128;

/// The Reed–Solomon engine of this build: [`Simd128`] in the browser (wasm32 with SIMD128),
/// the crate's own choice for the processor elsewhere. Every engine computes the same bytes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub type ErasureEngine = Simd128;
/// The Reed–Solomon engine of this build: the crate's own choice for the processor (SSSE3
/// or AVX2 on x86, Neon on aarch64, portable code elsewhere). Every engine computes the same
/// bytes.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub type ErasureEngine = reed_solomon_simd::engine::DefaultEngine;

type ReedSolomonEncoder = DefaultRateEncoder<ErasureEngine>;
type ReedSolomonDecoder = DefaultRateDecoder<ErasureEngine>;

/// The k + m shards of one sealed segment: `shards[..k]` are the data shards (the sealed
/// segment cut in k, zero-padded), `shards[k..]` the parity shards; `ids[i]` names `shards[i]`.
#[derive(Clone, Debug)]
pub struct Stripe {
    /// Position of the segment in the file.
    pub index: u64,
    /// The shards, data first.
    pub shards: Vec<Bytes>,
    /// The BLAKE3 id of each shard.
    pub ids: Vec<ShardId>,
}

/// Codes sealed segments into stripes, reusing its work buffers from stripe to stripe.
pub struct StripeEncoder {
    params: Params,
    rs: Option<ReedSolomonEncoder>,
}

impl StripeEncoder {
    /// An encoder for k + m shards per stripe.
    pub fn new(params: Params) -> Self {
        Self { params, rs: None }
    }

    /// Cuts `sealed` into k data shards, computes m parity shards and names them all.
    /// The data shards share `sealed`'s allocation; only parity is copied.
    pub fn encode(&mut self, index: u64, mut sealed: Vec<u8>) -> Result<Stripe, Error> {
        let (k, m) = (self.params.k(), self.params.m());
        let len = shard_len(sealed.len(), k);
        sealed.resize(len * k, 0);
        let data = Bytes::from(sealed);
        let rs = match &mut self.rs {
            Some(rs) => {
                rs.reset(k, m, len)?;
                rs
            }
            slot => slot.insert(ReedSolomonEncoder::new(k, m, len, ErasureEngine::new(), None)?),
        };
        for shard in data.chunks_exact(len) {
            rs.add_original_shard(shard)?;
        }
        let parity = rs.encode()?;
        let mut shards = Vec::with_capacity(k + m);
        shards.extend((0..k).map(|i| data.slice(i * len..(i + 1) * len)));
        shards.extend(parity.recovery_iter().map(Bytes::copy_from_slice));
        let ids = shards.iter().map(|s| ShardId::of(s)).collect();
        Ok(Stripe { index, shards, ids })
    }
}

impl std::fmt::Debug for StripeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeEncoder").field("params", &self.params).finish_non_exhaustive()
    }
}

/// Work buffers for Reed–Solomon recovery, kept across stripes so that decoding does not
/// allocate a new set per stripe.
#[derive(Default)]
pub struct RecoveryScratch(Option<ReedSolomonDecoder>);

impl std::fmt::Debug for RecoveryScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryScratch")
    }
}

/// Collects verified shards of one stripe until any k of them rebuild the sealed segment.
#[derive(Debug, Clone)]
pub struct StripeDecoder {
    stripe: u64,
    k: usize,
    shard_len: usize,
    ids: Vec<ShardId>,
    shards: Vec<Option<Bytes>>,
    found: usize,
}

impl StripeDecoder {
    /// A decoder for stripe `stripe`, whose shards are `ids` (k data ids, then parity) and
    /// each `shard_len` bytes long.
    pub fn new(stripe: u64, k: usize, shard_len: usize, ids: &[ShardId]) -> Self {
        Self { stripe, k, shard_len, ids: ids.to_vec(), shards: vec![None; ids.len()], found: 0 }
    }

    /// Verifies `shard` as shard `index` and keeps it. A shard of the wrong length or whose
    /// hash differs from its id is refused with an error naming it, and the decoder is
    /// unchanged: fetch that shard, or another, elsewhere. Returns whether k shards are held.
    pub fn add(&mut self, index: usize, shard: Bytes) -> Result<bool, Error> {
        let expected = self.expected(index, shard.len())?;
        let shard = VerifiedShard::check(expected, shard).map_err(|actual| {
            Error::ShardMismatch { stripe: self.stripe, index, expected, actual }
        })?;
        self.add_verified(index, shard)
    }

    /// Keeps `shard`, verified by whoever fetched it, as shard `index`, without hashing it
    /// again: it is refused as [`StripeDecoder::add`] refuses it if it was verified against
    /// another id or has the wrong length.
    pub fn add_verified(&mut self, index: usize, shard: VerifiedShard) -> Result<bool, Error> {
        let expected = self.expected(index, shard.bytes().len())?;
        if shard.id() != expected {
            let (stripe, actual) = (self.stripe, shard.id());
            return Err(Error::ShardMismatch { stripe, index, expected, actual });
        }
        if let Some(slot @ None) = self.shards.get_mut(index) {
            *slot = Some(shard.into_bytes());
            self.found += 1;
        }
        Ok(self.is_ready())
    }

    /// The id of shard `index`, if a shard of `len` bytes can be it.
    fn expected(&self, index: usize, len: usize) -> Result<ShardId, Error> {
        let (stripe, shards) = (self.stripe, self.ids.len());
        let expected = *self.ids.get(index).ok_or(Error::NoSuchShard { stripe, index, shards })?;
        if len != self.shard_len {
            return Err(Error::ShardLength {
                stripe,
                index,
                expected: self.shard_len,
                actual: len,
            });
        }
        Ok(expected)
    }

    /// Whether shard `index` is held.
    pub fn has(&self, index: usize) -> bool {
        matches!(self.shards.get(index), Some(Some(_)))
    }

    /// Verified shards held.
    pub fn found(&self) -> usize {
        self.found
    }

    /// Whether any k shards are held, enough to decode.
    pub fn is_ready(&self) -> bool {
        self.found >= self.k
    }

    /// The stripe's index in the file.
    pub fn stripe(&self) -> u64 {
        self.stripe
    }

    /// Rebuilds the sealed segment of `sealed_len` bytes. With all k data shards held this
    /// only concatenates them; otherwise Reed–Solomon restores the missing ones, and each one
    /// restored must hash to its id, like a shard received: so the segment is the one the
    /// manifest names whichever k shards it came from.
    pub fn decode(
        &self,
        sealed_len: usize,
        scratch: &mut RecoveryScratch,
    ) -> Result<Vec<u8>, Error> {
        if !self.is_ready() {
            return Err(self.not_enough());
        }
        let mut out = Vec::with_capacity(self.k * self.shard_len);
        let data = self.shards.iter().take(self.k);
        if data.clone().all(Option::is_some) {
            data.flatten().for_each(|s| out.extend_from_slice(s));
        } else {
            let rs = self.recover(scratch)?;
            let result = rs.decode()?;
            for (i, held) in self.shards.iter().take(self.k).enumerate() {
                let shard = match held {
                    Some(shard) => &shard[..],
                    None => {
                        let restored =
                            result.restored_original(i).ok_or_else(|| self.not_enough())?;
                        if self.ids.get(i) != Some(&ShardId::of(restored)) {
                            let stripe = self.stripe;
                            return Err(Error::InconsistentParity { stripe, index: i });
                        }
                        restored
                    }
                };
                out.extend_from_slice(shard);
            }
        }
        out.truncate(sealed_len);
        Ok(out)
    }

    fn recover<'a>(
        &self,
        scratch: &'a mut RecoveryScratch,
    ) -> Result<&'a mut ReedSolomonDecoder, Error> {
        let m = self.shards.len() - self.k;
        let rs = match &mut scratch.0 {
            Some(rs) => {
                rs.reset(self.k, m, self.shard_len)?;
                rs
            }
            slot => slot.insert(ReedSolomonDecoder::new(
                self.k,
                m,
                self.shard_len,
                ErasureEngine::new(),
                None,
            )?),
        };
        let mut added = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            let Some(shard) = shard else { continue };
            if i < self.k {
                rs.add_original_shard(i, shard)?;
            } else {
                rs.add_recovery_shard(i - self.k, shard)?;
            }
            added += 1;
            if added == self.k {
                break;
            }
        }
        Ok(rs)
    }

    fn not_enough(&self) -> Error {
        Error::NotEnoughShards { stripe: self.stripe, found: self.found, needed: self.k }
    }
}

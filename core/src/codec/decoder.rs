//! The download pipeline: verify, decode and open stripes, yielding plaintext in order.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{
    Error, FileId, FileKey, Layout, RecoveryScratch, SegmentCipher, ShardId, StripeDecoder,
    VerifiedShard,
};

/// A stripe decoded back into its sealed segment, to be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// Position of the segment in the file.
    pub index: u64,
    /// Whether it is the file's last segment.
    pub last: bool,
    /// Ciphertext followed by the tag.
    pub data: Vec<u8>,
}

/// Stripes a [`Decoder`] accepts shards for at once unless told otherwise.
pub const DEFAULT_WINDOW: usize = 4;

/// Rebuilds a file from shards arriving in any order, yielding its segments in order.
///
/// Shards are accepted only for the stripes in the window `next..next + window`, so memory
/// stays at `window` stripes whatever the file size. Each shard is verified against its id on
/// arrival, and each one rebuilt from parity when it is decoded; each segment is authenticated
/// before it is returned. The ciphertext is then exactly the one the manifest's shard ids name,
/// whichever k shards of a stripe arrived, and its plaintext the one its tags authenticate:
/// two readers of a link get the same bytes, and a reader gets no segment unverified. (The
/// plaintext hash a manifest carries adds nothing to that, and is not hashed again here:
/// in a browser that would cost a fifth of a download's time.)
#[derive(Debug)]
pub struct Decoder {
    layout: Layout,
    cipher: SegmentCipher,
    ids: Vec<ShardId>,
    window: usize,
    next: u64,
    pending: VecDeque<StripeDecoder>,
    scratch: RecoveryScratch,
}

impl Decoder {
    /// A decoder for the file with this layout, id and shard ids (k + m per stripe, stripe by
    /// stripe). [`crate::Manifest::decoder`] is the usual way to get one.
    pub fn new(layout: Layout, file_id: FileId, ids: Vec<ShardId>, key: &FileKey) -> Self {
        Self {
            layout,
            cipher: SegmentCipher::new(key, file_id),
            ids,
            window: DEFAULT_WINDOW,
            next: 0,
            pending: VecDeque::new(),
            scratch: RecoveryScratch::default(),
        }
    }

    /// The same decoder with a window of `window` stripes (at least 1).
    pub fn with_window(self, window: usize) -> Self {
        Self { window: window.max(1), ..self }
    }

    /// The file's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The next stripe to be returned.
    pub fn next_stripe(&self) -> u64 {
        self.next
    }

    /// One past the last stripe that shards are accepted for now.
    pub fn window_end(&self) -> u64 {
        (self.next + self.window as u64).min(self.layout.stripes())
    }

    /// The ids of stripe `stripe`'s shards, data first.
    pub fn stripe_ids(&self, stripe: u64) -> Result<&[ShardId], Error> {
        let n = self.layout.params().shards();
        usize::try_from(stripe)
            .ok()
            .and_then(|s| self.ids.get(s.checked_mul(n)?..s.checked_mul(n)?.checked_add(n)?))
            .ok_or(Error::NoSuchStripe { stripe, stripes: self.layout.stripes() })
    }

    /// Whether shard `index` of `stripe` is already held (so need not be fetched).
    pub fn has_shard(&self, stripe: u64, index: usize) -> bool {
        self.offset(stripe).and_then(|o| self.pending.get(o)).is_some_and(|s| s.has(index))
    }

    /// Verifies and keeps shard `index` of `stripe`; returns whether that stripe can now be
    /// decoded. A shard that fails verification is refused with an error naming it, and the
    /// decoder is unchanged.
    pub fn add_shard(&mut self, stripe: u64, index: usize, shard: Bytes) -> Result<bool, Error> {
        self.stripe_decoder(stripe)?.add(index, shard)
    }

    /// [`Decoder::add_shard`] for a shard already verified (by the network that fetched it):
    /// its id is compared with the one expected, its bytes are not hashed again.
    pub fn add_verified_shard(
        &mut self,
        stripe: u64,
        index: usize,
        shard: VerifiedShard,
    ) -> Result<bool, Error> {
        self.stripe_decoder(stripe)?.add_verified(index, shard)
    }

    /// The decoder of `stripe`, made (with those before it) if it is in the window.
    fn stripe_decoder(&mut self, stripe: u64) -> Result<&mut StripeDecoder, Error> {
        let outside = Error::OutsideWindow { stripe, next: self.next, end: self.window_end() };
        let offset = self.offset(stripe).ok_or(outside)?;
        while self.pending.len() <= offset {
            let s = self.next + self.pending.len() as u64;
            let decoder = StripeDecoder::new(
                s,
                self.layout.params().k(),
                self.layout.shard_len(s)?,
                self.stripe_ids(s)?,
            );
            self.pending.push_back(decoder);
        }
        let end = self.window_end();
        self.pending.get_mut(offset).ok_or(Error::OutsideWindow { stripe, next: self.next, end })
    }

    /// Whether the next stripe holds k verified shards.
    pub fn is_next_ready(&self) -> bool {
        self.pending.front().is_some_and(StripeDecoder::is_ready)
    }

    /// Decodes and opens the next stripe and returns its plaintext. Fails with
    /// [`Error::NotEnoughShards`] (naming the stripe and the count) if fewer than k good shards
    /// arrived, [`Error::InconsistentParity`] if a data shard rebuilt from them is not the one
    /// named, and [`Error::Decrypt`] if the segment does not authenticate.
    pub fn decode_next(&mut self) -> Result<Vec<u8>, Error> {
        let sealed = self.decode_next_sealed()?;
        self.open(sealed)
    }

    /// Decodes the next stripe into its sealed segment, for a host that opens segments itself
    /// (and must refuse a segment that does not authenticate).
    pub fn decode_next_sealed(&mut self) -> Result<SealedSegment, Error> {
        let stripe = self.next;
        let stripes = self.layout.stripes();
        if stripe >= stripes {
            return Err(Error::NoSuchStripe { stripe, stripes });
        }
        let Some(decoder) = self.pending.front() else {
            let needed = self.layout.params().k();
            return Err(Error::NotEnoughShards { stripe, found: 0, needed });
        };
        let data = decoder.decode(self.layout.sealed_len(stripe)?, &mut self.scratch)?;
        self.pending.pop_front();
        self.next += 1;
        Ok(SealedSegment { index: stripe, last: self.layout.is_last(stripe), data })
    }

    /// Opens a sealed segment with the reference cipher.
    pub fn open(&self, sealed: SealedSegment) -> Result<Vec<u8>, Error> {
        let mut data = sealed.data;
        self.cipher.open(sealed.index, sealed.last, &mut data)?;
        Ok(data)
    }

    /// Whether every stripe has been returned.
    pub fn is_done(&self) -> bool {
        self.next == self.layout.stripes()
    }

    /// Checks that every stripe was returned.
    pub fn finish(self) -> Result<(), Error> {
        if !self.is_done() {
            return Err(Error::Incomplete { next: self.next, stripes: self.layout.stripes() });
        }
        Ok(())
    }

    fn offset(&self, stripe: u64) -> Option<usize> {
        if stripe < self.next || stripe >= self.window_end() {
            return None;
        }
        usize::try_from(stripe - self.next).ok()
    }
}

//! The upload pipeline: segment, seal, code and hash a stream of bytes.

use super::{
    Error, FileId, FileKey, Layout, Params, SegmentCipher, Segmenter, ShardId, Stripe,
    StripeEncoder, TAG_LEN,
};
use crate::manifest;

/// Turns a stream of plaintext into stripes of shards, one segment at a time.
///
/// Memory: one segment being filled plus the stripe being returned, whatever the file size.
/// Every shard id is kept (32 bytes per shard) for the manifest.
///
/// ```
/// # use shardweb_core::codec::{Encoder, FileId, FileKey, Params};
/// let key = FileKey::generate()?;
/// let mut encoder = Encoder::new(Params::new(4, 2)?, &key, FileId::generate()?);
/// let mut input: &[u8] = b"some bytes";
/// while let Some(stripe) = encoder.push(&mut input)? {
///     // store or send stripe.shards
/// }
/// let (last, encoded) = encoder.finish()?;
/// assert_eq!(encoded.size, 10);
/// # Ok::<(), shardweb_core::codec::Error>(())
/// ```
#[derive(Debug)]
pub struct Encoder {
    params: Params,
    cipher: SegmentCipher,
    segmenter: Segmenter,
    coder: StripeEncoder,
    hasher: blake3::Hasher,
    ids: Vec<ShardId>,
    size: u64,
    max_stripes: u64,
}

/// What the manifest needs from a finished encode.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The coding parameters.
    pub params: Params,
    /// The file's public id.
    pub file_id: FileId,
    /// Plaintext bytes.
    pub size: u64,
    /// BLAKE3 of the whole plaintext.
    pub plaintext_hash: [u8; 32],
    /// All shard ids, stripe by stripe, k + m per stripe.
    pub shard_ids: Vec<ShardId>,
}

impl Encoded {
    /// The layout of the encoded file.
    pub fn layout(&self) -> Layout {
        Layout::new(self.params, self.size)
    }
}

impl Encoder {
    /// An encoder for one file sealed under `key`.
    pub fn new(params: Params, key: &FileKey, file_id: FileId) -> Self {
        let reserve = TAG_LEN + 2 * params.k();
        Self {
            params,
            cipher: SegmentCipher::new(key, file_id),
            segmenter: Segmenter::new(params.segment_size(), reserve),
            coder: StripeEncoder::new(params),
            hasher: blake3::Hasher::new(),
            ids: Vec::new(),
            size: 0,
            max_stripes: manifest::max_stripes(params),
        }
    }

    /// Takes bytes from the front of `input`; returns a stripe whenever a segment is complete.
    /// Call again while `input` is not empty.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<Stripe>, Error> {
        let before = input.len();
        let segment = self.segmenter.push(input);
        self.size += (before - input.len()) as u64;
        match segment {
            Some(segment) => self.code(segment).map(Some),
            None => Ok(None),
        }
    }

    /// Codes the final segment and returns it with what the manifest needs.
    pub fn finish(mut self) -> Result<(Stripe, Encoded), Error> {
        let segmenter = std::mem::replace(&mut self.segmenter, Segmenter::new(0, 0));
        let stripe = self.code(segmenter.finish())?;
        let encoded = Encoded {
            params: self.params,
            file_id: self.cipher.file_id(),
            size: self.size,
            plaintext_hash: *self.hasher.finalize().as_bytes(),
            shard_ids: self.ids,
        };
        Ok((stripe, encoded))
    }

    /// Plaintext bytes taken so far.
    pub fn bytes_in(&self) -> u64 {
        self.size
    }

    fn code(&mut self, mut segment: super::Segment) -> Result<Stripe, Error> {
        if segment.index >= self.max_stripes {
            return Err(Error::TooManyStripes {
                stripes: segment.index + 1,
                max: self.max_stripes,
            });
        }
        self.hasher.update(&segment.data);
        self.cipher.seal(segment.index, segment.last, &mut segment.data);
        let stripe = self.coder.encode(segment.index, segment.data)?;
        self.ids.extend_from_slice(&stripe.ids);
        Ok(stripe)
    }
}

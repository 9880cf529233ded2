//! The upload pipeline: segment, seal, code and hash a stream of bytes.

use super::{
    Error, FileId, FileKey, Layout, Params, Segment, SegmentCipher, Segmenter, ShardId, Stripe,
    StripeEncoder, TAG_LEN,
};
use crate::manifest;

/// Turns a stream of plaintext into stripes of shards, one segment at a time.
///
/// [`Encoder::push`] (or [`Encoder::read`], which reads a file straight into each segment)
/// and [`Encoder::finish`] run every step with the reference sealer. A host
/// that seals elsewhere (WebCrypto in the browser) drives the steps itself:
/// [`Encoder::next_segment`] / [`Encoder::last_segment`] cut and hash the plaintext, the host
/// seals each segment with [`super::segment_nonce`] and [`super::segment_aad`], and
/// [`Encoder::code_sealed`] codes and names the result, in segment order. A resumed upload
/// passes the ids of stripes coded before with [`Encoder::skip_coded`] instead.
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
    segmenter: Option<Segmenter>,
    coder: StripeEncoder,
    hasher: blake3::Hasher,
    ids: Vec<ShardId>,
    size: u64,
    coded: u64,
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
            segmenter: Some(Segmenter::new(params.segment_size(), reserve)),
            coder: StripeEncoder::new(params),
            hasher: blake3::Hasher::new(),
            ids: Vec::new(),
            size: 0,
            coded: 0,
            max_stripes: manifest::max_stripes(params),
        }
    }

    /// Takes bytes from the front of `input`; returns a stripe whenever a segment is complete.
    /// Call again while `input` is not empty.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<Stripe>, Error> {
        match self.next_segment(input)? {
            Some(segment) => self.seal_and_code(segment).map(Some),
            None => Ok(None),
        }
    }

    /// [`Encoder::push`] for a source that can be read (a file): reads straight into the
    /// segment being built and returns the next stripe, or `None` once `reader` is at its end
    /// (then call [`Encoder::finish`]). After a read error the encoder takes no more input
    /// (every later call is [`Error::Finished`]).
    pub fn read<R: std::io::Read + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<Stripe>, Error> {
        let Some(segmenter) = self.segmenter.as_mut() else {
            return Err(Error::Finished);
        };
        let (segment, n) = segmenter.read_from(reader).map_err(|e| {
            self.segmenter = None;
            Error::Read(e)
        })?;
        self.size += n as u64;
        match segment {
            Some(segment) => {
                let segment = self.hashed(segment)?;
                self.seal_and_code(segment).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Codes the final segment and returns it with what the manifest needs.
    pub fn finish(mut self) -> Result<(Stripe, Encoded), Error> {
        let segment = self.last_segment()?;
        let stripe = self.seal_and_code(segment)?;
        Ok((stripe, self.into_encoded()?))
    }

    /// Takes bytes from the front of `input` and returns the next plaintext segment once it is
    /// complete, already counted in the file's hash. Call again while `input` is not empty.
    pub fn next_segment(&mut self, input: &mut &[u8]) -> Result<Option<Segment>, Error> {
        let Some(segmenter) = self.segmenter.as_mut() else {
            return Err(Error::Finished);
        };
        let before = input.len();
        let segment = segmenter.push(input);
        self.size += (before - input.len()) as u64;
        segment.map(|s| self.hashed(s)).transpose()
    }

    /// [`Encoder::next_segment`] for a source that copies into memory it is handed: see
    /// [`crate::codec::Segmenter::push_from`]. Returns a segment, if one completed, and how
    /// many of the `len` bytes offered `fill` wrote.
    pub fn next_segment_from(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(Option<Segment>, usize), Error> {
        let Some(segmenter) = self.segmenter.as_mut() else {
            return Err(Error::Finished);
        };
        let (segment, taken) = segmenter.push_from(len, fill);
        self.size += taken as u64;
        Ok((segment.map(|s| self.hashed(s)).transpose()?, taken))
    }

    /// The file's final segment (possibly empty), after which no more input is taken.
    pub fn last_segment(&mut self) -> Result<Segment, Error> {
        let segmenter = self.segmenter.take().ok_or(Error::Finished)?;
        self.hashed(segmenter.finish())
    }

    /// Codes and names sealed segment `index` (plaintext sealed by the host, tag appended).
    /// Segments must be coded in order, each once.
    pub fn code_sealed(&mut self, index: u64, sealed: Vec<u8>) -> Result<Stripe, Error> {
        self.check_order(index)?;
        let stripe = self.coder.encode(index, sealed)?;
        self.ids.extend_from_slice(&stripe.ids);
        self.coded += 1;
        Ok(stripe)
    }

    /// Records stripe `index` as coded earlier, with these ids (a resumed upload: the segment's
    /// plaintext still goes through [`Encoder::next_segment`] for the file's hash).
    pub fn skip_coded(&mut self, index: u64, ids: &[ShardId]) -> Result<(), Error> {
        self.check_order(index)?;
        if ids.len() != self.params.shards() {
            let expected = self.params.shards();
            return Err(Error::ShardCount { stripe: index, ids: ids.len(), expected });
        }
        self.ids.extend_from_slice(ids);
        self.coded += 1;
        Ok(())
    }

    /// What the manifest needs, once every segment including the last has been coded.
    pub fn into_encoded(self) -> Result<Encoded, Error> {
        let stripes = Layout::new(self.params, self.size).stripes();
        if self.segmenter.is_some() || self.coded != stripes {
            return Err(Error::Incomplete { next: self.coded, stripes });
        }
        Ok(Encoded {
            params: self.params,
            file_id: self.cipher.file_id(),
            size: self.size,
            plaintext_hash: *self.hasher.finalize().as_bytes(),
            shard_ids: self.ids,
        })
    }

    /// Plaintext bytes taken so far.
    pub fn bytes_in(&self) -> u64 {
        self.size
    }

    /// The coding parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    fn hashed(&mut self, segment: Segment) -> Result<Segment, Error> {
        if segment.index >= self.max_stripes {
            return Err(Error::TooManyStripes {
                stripes: segment.index + 1,
                max: self.max_stripes,
            });
        }
        self.hasher.update(&segment.data);
        Ok(segment)
    }

    fn check_order(&self, index: u64) -> Result<(), Error> {
        if index == self.coded {
            Ok(())
        } else {
            Err(Error::OutOfOrder { expected: self.coded, actual: index })
        }
    }

    fn seal_and_code(&mut self, mut segment: Segment) -> Result<Stripe, Error> {
        self.cipher.seal(segment.index, segment.last, &mut segment.data);
        self.code_sealed(segment.index, segment.data)
    }
}

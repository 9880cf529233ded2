//! The shape of an encoded file, derived from its parameters and size alone.

use super::{Error, Params, TAG_LEN};

/// Where every byte of a file lives: how many stripes, and how long each segment, sealed
/// segment and shard is. Every length is derived, so a manifest records none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    params: Params,
    size: u64,
}

impl Layout {
    /// The layout of a file of `size` plaintext bytes.
    pub fn new(params: Params, size: u64) -> Self {
        Self { params, size }
    }

    /// The coding parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The plaintext size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of stripes (segments); an empty file has one, empty.
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.params.segment_size() as u64).max(1)
    }

    /// Plaintext bytes in segment `stripe`.
    pub fn segment_len(&self, stripe: u64) -> Result<usize, Error> {
        self.check(stripe)?;
        let seg = self.params.segment_size() as u64;
        let start = stripe * seg;
        #[allow(clippy::cast_possible_truncation)] // ≤ segment size
        Ok((self.size - start).min(seg) as usize)
    }

    /// Bytes of sealed segment `stripe` (plaintext plus tag).
    pub fn sealed_len(&self, stripe: u64) -> Result<usize, Error> {
        Ok(self.segment_len(stripe)? + TAG_LEN)
    }

    /// Bytes in each shard of stripe `stripe`.
    pub fn shard_len(&self, stripe: u64) -> Result<usize, Error> {
        Ok(shard_len(self.sealed_len(stripe)?, self.params.k()))
    }

    /// Whether `stripe` is the last one.
    pub fn is_last(&self, stripe: u64) -> bool {
        stripe + 1 == self.stripes()
    }

    fn check(&self, stripe: u64) -> Result<(), Error> {
        if stripe < self.stripes() {
            Ok(())
        } else {
            Err(Error::NoSuchStripe { stripe, stripes: self.stripes() })
        }
    }
}

/// The shard length for `sealed_len` bytes cut into `k` shards: rounded up to an even number,
/// as the Reed–Solomon coder requires. The zero padding is implied by the sealed length.
pub(crate) fn shard_len(sealed_len: usize, k: usize) -> usize {
    let len = sealed_len.div_ceil(k);
    len + (len & 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let p = Params::new(4, 2).unwrap().with_segment_size(100).unwrap();
        let l = Layout::new(p, 250);
        assert_eq!(l.stripes(), 3);
        assert_eq!(l.segment_len(2).unwrap(), 50);
        assert_eq!(l.sealed_len(2).unwrap(), 66);
        assert_eq!(l.shard_len(2).unwrap(), 18);
        assert_eq!(l.shard_len(0).unwrap(), 30);
        assert!(l.is_last(2));
        assert!(l.segment_len(3).is_err());
        let empty = Layout::new(p, 0);
        assert_eq!(empty.stripes(), 1);
        assert_eq!(empty.shard_len(0).unwrap(), 4);
        assert_eq!(Layout::new(p, 200).stripes(), 2);
    }
}

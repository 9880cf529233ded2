//! Coding parameters: k data shards, m parity shards and the segment size.

use super::Error;

/// The most shards (k + m) a stripe may have.
pub const MAX_SHARDS: usize = 256;
/// Plaintext bytes per segment unless configured otherwise: 4 MiB.
pub const DEFAULT_SEGMENT_SIZE: usize = 4 << 20;
/// Largest segment: bounds the memory a stripe can take.
pub const MAX_SEGMENT_SIZE: usize = 64 << 20;
/// Smallest segment: keeps the manifest in proportion to the file.
pub const MIN_SEGMENT_SIZE: usize = 16;

/// Validated coding parameters. k = 1 is whole-file replication: m + 1 identical copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    k: u16,
    m: u16,
    segment_size: u32,
}

impl Params {
    /// k data and m parity shards with the default segment size.
    pub fn new(k: usize, m: usize) -> Result<Self, Error> {
        if k == 0 || m == 0 || k + m > MAX_SHARDS {
            return Err(Error::InvalidParams { k, m });
        }
        #[allow(clippy::cast_possible_truncation)] // k, m ≤ 255, segment size ≤ 64 MiB
        Ok(Self { k: k as u16, m: m as u16, segment_size: DEFAULT_SEGMENT_SIZE as u32 })
    }

    /// The same parameters with another segment size.
    pub fn with_segment_size(self, segment_size: usize) -> Result<Self, Error> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(Error::InvalidSegmentSize { segment_size });
        }
        #[allow(clippy::cast_possible_truncation)]
        Ok(Self { segment_size: segment_size as u32, ..self })
    }

    /// Data shards per stripe.
    pub fn k(&self) -> usize {
        usize::from(self.k)
    }

    /// Parity shards per stripe.
    pub fn m(&self) -> usize {
        usize::from(self.m)
    }

    /// Shards per stripe, k + m.
    pub fn shards(&self) -> usize {
        self.k() + self.m()
    }

    /// Plaintext bytes per segment (the last segment may be shorter).
    pub fn segment_size(&self) -> usize {
        self.segment_size as usize
    }
}

impl Default for Params {
    /// (4, 2) with 4 MiB segments: any two of six holders may vanish.
    fn default() -> Self {
        Self { k: 4, m: 2, segment_size: DEFAULT_SEGMENT_SIZE as u32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Params::new(1, 1).is_ok());
        assert!(Params::new(255, 1).is_ok());
        assert!(Params::new(1, 255).is_ok());
        assert!(matches!(Params::new(0, 2), Err(Error::InvalidParams { k: 0, m: 2 })));
        assert!(matches!(Params::new(2, 0), Err(Error::InvalidParams { .. })));
        assert!(matches!(Params::new(200, 57), Err(Error::InvalidParams { .. })));
        let p = Params::new(4, 2).unwrap();
        assert!(matches!(p.with_segment_size(15), Err(Error::InvalidSegmentSize { .. })));
        assert!(p.with_segment_size(MAX_SEGMENT_SIZE + 1).is_err());
        assert_eq!(p.with_segment_size(16).unwrap().segment_size(), 16);
    }
}

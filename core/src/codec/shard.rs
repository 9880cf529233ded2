//! Shard ids: every shard is named by the BLAKE3 hash of its bytes.

use std::fmt;

use bytes::Bytes;

/// The BLAKE3-256 hash of a shard's bytes, its name everywhere in shardweb.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub [u8; 32]);

impl ShardId {
    /// The id of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// A shard id that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shard id is 64 lowercase hex digits")]
pub struct MalformedShardId;

impl std::str::FromStr for ShardId {
    type Err = MalformedShardId;

    /// Parses what [`fmt::Display`] writes: 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(MalformedShardId);
        }
        let bytes = data_encoding::HEXLOWER.decode(s.as_bytes()).map_err(|_| MalformedShardId)?;
        bytes.try_into().map(Self).map_err(|_| MalformedShardId)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({self})")
    }
}

/// A shard's bytes that hash to their id: made only by [`VerifiedShard::check`], so holding one
/// is proof that the hash was taken, and whoever takes it need not hash the bytes again.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedShard {
    id: ShardId,
    bytes: Bytes,
}

impl VerifiedShard {
    /// Hashes `bytes` and compares with `id`; a mismatch returns the id the bytes hash to.
    pub fn check(id: ShardId, bytes: Bytes) -> Result<Self, ShardId> {
        let actual = ShardId::of(&bytes);
        if actual == id { Ok(Self { id, bytes }) } else { Err(actual) }
    }

    /// The id the bytes hash to.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes, without the proof.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl fmt::Debug for VerifiedShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedShard")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_that_hash_to_the_id_are_verified() {
        let bytes = Bytes::from_static(b"a shard");
        let id = ShardId::of(&bytes);
        let shard = VerifiedShard::check(id, bytes.clone()).unwrap();
        assert_eq!((shard.id(), shard.bytes()), (id, &bytes));
        assert_eq!(shard.into_bytes(), bytes);

        let other = Bytes::from_static(b"a shard!");
        assert_eq!(VerifiedShard::check(id, other.clone()), Err(ShardId::of(&other)));
    }

    #[test]
    fn a_shard_id_reads_back_from_its_hex_and_nothing_else() {
        // BLAKE3 of no bytes, as its reference implementation prints it.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(ShardId::of(b"").to_string(), empty);
        assert_eq!(empty.parse(), Ok(ShardId::of(b"")));
        let upper = empty.to_uppercase();
        for bad in ["", &empty[..63], &format!("{empty}0"), &upper, &empty.replace('a', "g")] {
            assert_eq!(bad.parse::<ShardId>(), Err(MalformedShardId), "{bad:?}");
        }
    }
}

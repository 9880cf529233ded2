//! What the engines need from a network: request-response with named peers.

use std::fmt;
use std::future::Future;
use std::hash::Hash;

use bytes::Bytes;

use crate::ManifestId;
use crate::codec::{ShardId, VerifiedShard};
use crate::protocol::{ManifestOutcome, PutOutcome, Refusal, ShardStatus};

/// Why a request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The peer could not be reached or the connection dropped.
    #[error("peer unreachable: {detail}")]
    Unreachable { detail: String },
    /// The peer did not answer in time.
    #[error("request timed out")]
    Timeout,
    /// The peer refused the request.
    #[error("peer refused the request ({:?}): {}", .0.code, .0.message)]
    Refused(Refusal),
    /// The peer answered with something that is not a valid reply to the request.
    #[error("peer sent an invalid reply: {detail}")]
    InvalidReply { detail: String },
}

/// One shard of a get reply, checked against the id asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The shard, hashed and found to be the one asked for.
    Verified(VerifiedShard),
    /// Bytes came that are not the shard asked for: they hash to `actual`.
    Corrupt { actual: ShardId },
    /// Not held by that peer.
    Missing,
    /// Held, but over that reply's size budget: ask again.
    Deferred,
}

impl Fetched {
    /// Checks each status of a get reply against the id asked for, in order, hashing each
    /// shard's bytes once. A reply whose length differs from the request's is invalid.
    pub fn check_all(ids: &[ShardId], reply: Vec<ShardStatus>) -> Result<Vec<Self>, NetworkError> {
        if reply.len() != ids.len() {
            let detail = format!("{} shard statuses for {} ids", reply.len(), ids.len());
            return Err(NetworkError::InvalidReply { detail });
        }
        Ok(ids.iter().zip(reply).map(|(id, status)| Self::check(*id, status)).collect())
    }

    /// Checks one status against the id asked for.
    pub fn check(id: ShardId, status: ShardStatus) -> Self {
        match status {
            ShardStatus::Found(bytes) => match VerifiedShard::check(id, bytes) {
                Ok(shard) => Self::Verified(shard),
                Err(actual) => Self::Corrupt { actual },
            },
            ShardStatus::Missing => Self::Missing,
            ShardStatus::Deferred => Self::Deferred,
        }
    }
}

/// Request-response with peers, as the engines use it. Futures need not be `Send`: the engines
/// poll them in the caller's task.
pub trait Network {
    /// How peers are named.
    type Peer: Clone + Eq + Hash + fmt::Debug + fmt::Display;

    /// Stores shards on `peer`; one outcome per shard, in order.
    fn put_shards(
        &self,
        peer: &Self::Peer,
        shards: Vec<(ShardId, Bytes)>,
    ) -> impl Future<Output = Result<Vec<PutOutcome>, NetworkError>>;

    /// Fetches shards from `peer`, each checked against its id ([`Fetched::check_all`]); one
    /// per id, in order. The check is the network's so that a shard is hashed once, where it
    /// arrives, even by a network that keeps what it fetches.
    fn get_shards(
        &self,
        peer: &Self::Peer,
        ids: Vec<ShardId>,
    ) -> impl Future<Output = Result<Vec<Fetched>, NetworkError>>;

    /// Asks `peer` which of these shards it holds; one flag per id, in order.
    fn has_shards(
        &self,
        peer: &Self::Peer,
        ids: Vec<ShardId>,
    ) -> impl Future<Output = Result<Vec<bool>, NetworkError>>;

    /// Stores a manifest on `peer`.
    fn put_manifest(
        &self,
        peer: &Self::Peer,
        manifest: Bytes,
    ) -> impl Future<Output = Result<ManifestOutcome, NetworkError>>;

    /// Fetches a manifest's bytes from `peer`, `None` when it has none.
    fn get_manifest(
        &self,
        peer: &Self::Peer,
        id: ManifestId,
    ) -> impl Future<Output = Result<Option<Bytes>, NetworkError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_checked_shard_by_shard_against_the_ids_asked() {
        let (a, b) = (Bytes::from_static(b"shard a"), Bytes::from_static(b"shard b"));
        let ids = [ShardId::of(&a), ShardId::of(&b), ShardId::of(b"c"), ShardId::of(b"d")];
        let reply = vec![
            ShardStatus::Found(a.clone()),
            ShardStatus::Found(a.clone()),
            ShardStatus::Missing,
            ShardStatus::Deferred,
        ];
        let fetched = Fetched::check_all(&ids, reply.clone()).unwrap();
        let verified = VerifiedShard::check(ids[0], a).unwrap();
        assert_eq!(
            fetched,
            [
                Fetched::Verified(verified),
                Fetched::Corrupt { actual: ids[0] },
                Fetched::Missing,
                Fetched::Deferred
            ]
        );
        let short = Fetched::check_all(&ids[..3], reply);
        assert!(matches!(short, Err(NetworkError::InvalidReply { .. })), "{short:?}");
    }
}

//! What the engines need from a network: request-response with named peers.

use std::fmt;
use std::future::Future;
use std::hash::Hash;

use bytes::Bytes;

use crate::ManifestId;
use crate::codec::ShardId;
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

    /// Fetches shards from `peer`; one status per id, in order.
    fn get_shards(
        &self,
        peer: &Self::Peer,
        ids: Vec<ShardId>,
    ) -> impl Future<Output = Result<Vec<ShardStatus>, NetworkError>>;

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

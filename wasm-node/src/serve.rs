//! Answering other peers: a browser node serves the shards and manifests it holds, so that a
//! file stays reachable through it (over a relay circuit) while its tab is open.

use std::cell::Cell;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use shardweb_core::node::peer::{Inbound, MAX_PENDING_INBOUND};
use shardweb_core::protocol::{
    ErrorCode, MAX_FRAME_BYTES, ManifestRequest, ManifestResponse, Refusal, ShardRequest,
    ShardResponse, ShardStatus,
};

use crate::idb_store::IdbStore;
use crate::net::Counters;

/// Answers requests until the node stops, at most [`MAX_PENDING_INBOUND`] at once, so a slow
/// read does not hold up the others; past that, requests wait in the driver's queue (as many
/// again), and the driver refuses the rest as busy.
pub async fn serve(store: Rc<IdbStore>, counters: Rc<Counters>, requests: mpsc::Receiver<Inbound>) {
    let serving = Rc::new(Cell::new(0usize));
    requests
        .for_each_concurrent(MAX_PENDING_INBOUND, |request| {
            let (store, counters) = (Rc::clone(&store), Rc::clone(&counters));
            let serving = Rc::clone(&serving);
            async move {
                Counters::add(&counters.served, 1);
                match request {
                    Inbound::Shard { peer, request, reply } => {
                        let response = shards(&store, &counters, &serving, request).await;
                        tracing::debug!(%peer, "answered a shard request");
                        let _ = reply.send(response);
                    }
                    Inbound::Manifest { request, reply, .. } => {
                        let _ = reply.send(manifest(&store, request).await);
                    }
                }
            }
        })
        .await;
}

fn internal() -> Refusal {
    Refusal { code: ErrorCode::Internal, message: "the browser's store failed".into() }
}

/// The most bytes of shards read for replies at once, whatever the number of requests: what
/// is past it is deferred to a later request.
const MAX_SERVING_BYTES: usize = 64 << 20;

/// Bytes of the serving budget a request holds, given back when it is dropped.
struct Reserved<'a> {
    serving: &'a Cell<usize>,
    bytes: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.serving.set(self.serving.get() - self.bytes);
    }
}

async fn shards(
    store: &IdbStore,
    counters: &Counters,
    serving: &Cell<usize>,
    request: ShardRequest,
) -> ShardResponse {
    match request {
        ShardRequest::Get(ids) => {
            // What does not fit in one reply frame, or in what is left of the budget of all
            // replies, is not read, and is deferred to a later request.
            let frame = MAX_FRAME_BYTES.saturating_sub(3 + 5 * ids.len());
            let budget = frame.min(MAX_SERVING_BYTES - serving.get());
            serving.set(serving.get() + budget);
            let _reserved = Reserved { serving, bytes: budget };
            match store.get_shards_within(&ids, budget).await {
                Ok(found) => {
                    let mut statuses: Vec<ShardStatus> = found
                        .into_iter()
                        .map(|shard| match shard {
                            Some(bytes) => {
                                Counters::add(&counters.bytes_out, bytes.len() as u64);
                                ShardStatus::Found(bytes)
                            }
                            None => ShardStatus::Missing,
                        })
                        .collect();
                    statuses.resize_with(ids.len(), || ShardStatus::Deferred);
                    ShardResponse::Get(statuses)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read shards to serve");
                    ShardResponse::Refused(internal())
                }
            }
        }
        ShardRequest::Has(ids) => match store.has_shards(&ids).await {
            Ok(held) => ShardResponse::Has(held),
            Err(_) => ShardResponse::Refused(internal()),
        },
        ShardRequest::Put(_) => ShardResponse::Refused(Refusal {
            code: ErrorCode::Unauthorized,
            message: "a browser node keeps only the files its user shares or opens".into(),
        }),
    }
}

async fn manifest(store: &IdbStore, request: ManifestRequest) -> ManifestResponse {
    match request {
        ManifestRequest::Get(id) => match store.get_manifest(id).await {
            Ok(found) => ManifestResponse::Get(found),
            Err(_) => ManifestResponse::Refused(internal()),
        },
        ManifestRequest::Put(_) => ManifestResponse::Refused(Refusal {
            code: ErrorCode::Unauthorized,
            message: "a browser node keeps only the files its user shares or opens".into(),
        }),
    }
}

//! Answering other peers: a browser node serves the shards and manifests it holds, so that a
//! file stays reachable through it (over a relay circuit) while its tab is open.

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
    requests
        .for_each_concurrent(MAX_PENDING_INBOUND, |request| {
            let (store, counters) = (Rc::clone(&store), Rc::clone(&counters));
            async move {
                Counters::add(&counters.served, 1);
                match request {
                    Inbound::Shard { peer, request, reply } => {
                        let response = shards(&store, &counters, request).await;
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

async fn shards(store: &IdbStore, counters: &Counters, request: ShardRequest) -> ShardResponse {
    match request {
        ShardRequest::Get(ids) => {
            // What does not fit in one reply frame is not read, and is deferred to a later
            // request: a request for many large shards costs this node one frame of memory.
            let budget = MAX_FRAME_BYTES.saturating_sub(3 + 5 * ids.len());
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

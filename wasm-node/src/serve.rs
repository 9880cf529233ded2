//! Answering other peers: a browser node serves the shards and manifests it holds, so that a
//! file stays reachable through it (over a relay circuit) while its tab is open.

use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use shardweb_core::node::peer::Inbound;
use shardweb_core::protocol::{
    ErrorCode, MAX_FRAME_BYTES, ManifestRequest, ManifestResponse, Refusal, ShardRequest,
    ShardResponse, ShardStatus,
};

use crate::idb_store::IdbStore;
use crate::net::Counters;

/// Answers requests until the node stops. Each is answered in its own task, so a slow read
/// does not hold up the others; the driver bounds how many wait at once.
pub async fn serve(
    store: Rc<IdbStore>,
    counters: Rc<Counters>,
    mut requests: mpsc::Receiver<Inbound>,
) {
    while let Some(request) = requests.next().await {
        let (store, counters) = (Rc::clone(&store), Rc::clone(&counters));
        wasm_bindgen_futures::spawn_local(async move {
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
        });
    }
}

fn internal() -> Refusal {
    Refusal { code: ErrorCode::Internal, message: "the browser's store failed".into() }
}

async fn shards(store: &IdbStore, counters: &Counters, request: ShardRequest) -> ShardResponse {
    match request {
        ShardRequest::Get(ids) => match store.get_shards(&ids).await {
            Ok(found) => {
                // Whatever does not fit in one reply frame is deferred to a later request.
                let mut budget = MAX_FRAME_BYTES.saturating_sub(3 + 5 * ids.len());
                let statuses = found
                    .into_iter()
                    .map(|shard| match shard {
                        Some(bytes) if bytes.len() <= budget => {
                            budget -= bytes.len();
                            Counters::add(&counters.bytes_out, bytes.len() as u64);
                            ShardStatus::Found(bytes)
                        }
                        Some(_) => ShardStatus::Deferred,
                        None => ShardStatus::Missing,
                    })
                    .collect();
                ShardResponse::Get(statuses)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read shards to serve");
                ShardResponse::Refused(internal())
            }
        },
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

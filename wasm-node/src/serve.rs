//! Answering other peers: a browser node serves the shards and manifests it holds, so that a
//! file stays reachable through it (over a relay circuit) while its tab is open.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::PeerId;
use shardweb_core::node::peer::{Inbound, MAX_PENDING_INBOUND};
use shardweb_core::protocol::{
    ErrorCode, MAX_FRAME_BYTES, ManifestRequest, ManifestResponse, Refusal, ShardRequest,
    ShardResponse, ShardStatus,
};
use wasm_bindgen_futures::spawn_local;

use crate::idb_store::IdbStore;
use crate::net::Counters;

/// Answers requests until the node stops, at most [`MAX_PENDING_INBOUND`] at once, so a slow
/// read does not hold up the others; past that, requests wait in the driver's queue (as many
/// again), and the driver refuses the rest as busy. The shards of all replies, from their
/// reading until they are written to their peers, take at most `budget` bytes, and those of
/// one peer's replies at most half of it: what is past either is deferred to a later request
/// (the node passes [`MAX_SERVING_BYTES`]).
pub async fn serve(
    store: Rc<IdbStore>,
    counters: Rc<Counters>,
    requests: mpsc::Receiver<Inbound>,
    budget: usize,
) {
    let budget = Rc::new(Budget {
        left: Cell::new(budget),
        per_peer: budget / 2,
        peers: RefCell::default(),
    });
    requests
        .for_each_concurrent(MAX_PENDING_INBOUND, |request| {
            let (store, counters) = (Rc::clone(&store), Rc::clone(&counters));
            let budget = Rc::clone(&budget);
            async move {
                Counters::add(&counters.served, 1);
                match request {
                    Inbound::Shard { peer, request, reply } => {
                        let (response, held) =
                            shards(&store, &counters, &budget, peer, request).await;
                        tracing::debug!(%peer, "answered a shard request");
                        match held {
                            // The reply's shards stay counted until they are written, apart
                            // from the requests being answered: a peer that reads slowly holds
                            // its share of the budget, and neither more memory nor a slot.
                            Some(held) => spawn_local(async move {
                                reply.send(response).await;
                                drop(held);
                            }),
                            None => reply.answer(response),
                        }
                    }
                    Inbound::Manifest { request, reply, .. } => {
                        reply.answer(manifest(&store, request).await);
                    }
                }
            }
        })
        .await;
}

fn internal() -> Refusal {
    Refusal { code: ErrorCode::Internal, message: "the browser's store failed".into() }
}

/// The most bytes of shards the node's replies hold at once, from their reading until they
/// are written, whatever the number of requests: what is past it is deferred to a later
/// request.
pub const MAX_SERVING_BYTES: usize = 64 << 20;

/// What is left of the serving budget, and what each peer's replies hold of it.
struct Budget {
    left: Cell<usize>,
    /// The most one peer's replies hold: a peer that asks much and reads nothing (until its
    /// requests time out) leaves the other half to the others.
    per_peer: usize,
    peers: RefCell<HashMap<PeerId, usize>>,
}

impl Budget {
    /// Gives back `bytes` that `peer`'s replies held.
    fn give_back(&self, peer: PeerId, bytes: usize) {
        let mut peers = self.peers.borrow_mut();
        if let Some(held) = peers.get_mut(&peer) {
            *held -= bytes;
            if *held == 0 {
                peers.remove(&peer);
            }
        }
        self.left.set(self.left.get() + bytes);
    }
}

/// Takes for `peer` up to `wanted` bytes of what is left of `budget`, and of its share.
fn take(budget: &Rc<Budget>, peer: PeerId, wanted: usize) -> Reserved {
    let mut peers = budget.peers.borrow_mut();
    let held = peers.entry(peer).or_default();
    let bytes = wanted.min(budget.left.get()).min(budget.per_peer - *held);
    *held += bytes;
    if *held == 0 {
        peers.remove(&peer);
    }
    budget.left.set(budget.left.get() - bytes);
    Reserved { budget: Rc::clone(budget), peer, bytes }
}

/// Bytes of the serving budget a reply holds, given back when it is dropped.
struct Reserved {
    budget: Rc<Budget>,
    peer: PeerId,
    bytes: usize,
}

impl Reserved {
    /// Gives back what is past `bytes`.
    fn shrink_to(&mut self, bytes: usize) {
        let freed = self.bytes.saturating_sub(bytes);
        self.budget.give_back(self.peer, freed);
        self.bytes -= freed;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.give_back(self.peer, self.bytes);
    }
}

/// The answer to a shard request, with the budget its shards hold.
async fn shards(
    store: &IdbStore,
    counters: &Counters,
    budget: &Rc<Budget>,
    peer: PeerId,
    request: ShardRequest,
) -> (ShardResponse, Option<Reserved>) {
    let response = match request {
        ShardRequest::Get(ids) => {
            // What does not fit in one reply frame, in what is left of the budget of all
            // replies, or in the peer's share of it, is not read, and is deferred to a later
            // request. The reply then holds only the bytes it read.
            let frame = MAX_FRAME_BYTES.saturating_sub(3 + 5 * ids.len());
            let mut reserved = take(budget, peer, frame);
            if reserved.bytes == 0 {
                // Nothing is left: every shard is deferred, without reading any.
                let deferred = ids.iter().map(|_| ShardStatus::Deferred).collect();
                return (ShardResponse::Get(deferred), None);
            }
            match store.get_shards_within(&ids, reserved.bytes).await {
                Ok(found) => {
                    let read = found.iter().flatten().map(|b| b.len()).sum();
                    reserved.shrink_to(read);
                    Counters::add(&counters.bytes_out, read as u64);
                    let mut statuses: Vec<ShardStatus> = found
                        .into_iter()
                        .map(|shard| shard.map_or(ShardStatus::Missing, ShardStatus::Found))
                        .collect();
                    statuses.resize_with(ids.len(), || ShardStatus::Deferred);
                    return (ShardResponse::Get(statuses), (read > 0).then_some(reserved));
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
    };
    (response, None)
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

#[cfg(all(test, wasm_browser))]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::SinkExt;
    use libp2p::PeerId;
    use shardweb_core::codec::ShardId;
    use shardweb_core::node::peer::Responder;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    /// A reply's shards hold the serving budget until the driver has written them, not only
    /// while they are read, and only the bytes read, not the frame they could have filled;
    /// one peer's replies hold at most half of it. Once the replies are out, the whole budget
    /// is back.
    #[wasm_bindgen_test]
    async fn replies_hold_the_budget_until_they_are_written() {
        let name = format!("shardweb-test-serve-{}", js_sys::Math::random());
        let store = Rc::new(IdbStore::open(&name, None).await.unwrap());
        let [a, b, c] = [1u8, 2, 3].map(|seed| {
            let bytes: Vec<u8> = (0..1000).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect();
            (ShardId::of(&bytes), Bytes::from(bytes))
        });
        store.put_shards(&[a.clone(), b.clone(), c.clone()]).await.unwrap();
        let counters = Rc::new(Counters::default());
        let (mut requests, rx) = mpsc::channel(8);
        wasm_bindgen_futures::spawn_local(serve(Rc::clone(&store), Rc::clone(&counters), rx, 4000));

        let mut ask = async |peer: PeerId, ids: Vec<ShardId>| {
            let (reply, answer) = Responder::new();
            let request = ShardRequest::Get(ids);
            requests.send(Inbound::Shard { peer, request, reply }).await.unwrap();
            answer.await.unwrap()
        };
        // Each shard of a reply as the id of the bytes found, or `None` for deferred.
        let ids = |response: ShardResponse| match response {
            ShardResponse::Get(statuses) => statuses
                .into_iter()
                .map(|status| match status {
                    ShardStatus::Found(bytes) => Some(ShardId::of(&bytes)),
                    ShardStatus::Deferred => None,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let [one, two, three] = [(); 3].map(|_| PeerId::random());

        // 4000 bytes in all, 2000 a peer. The replies below are not written until said.
        let (first, first_written) = ask(one, vec![a.0]).await;
        assert_eq!(ids(first), [Some(a.0)]);
        // The first reply holds the 1000 bytes it read: its peer's share has room for one more.
        let (second, second_written) = ask(one, vec![c.0, b.0]).await;
        assert_eq!(ids(second), [Some(c.0), None]);
        // Another peer has its own share, and takes the 2000 bytes left.
        let (third, third_written) = ask(two, vec![b.0, a.0, c.0]).await;
        assert_eq!(ids(third), [Some(b.0), Some(a.0), None]);
        // None left for anyone while those replies are unwritten.
        let (fourth, _) = ask(three, vec![a.0]).await;
        assert_eq!(ids(fourth), [None]);
        // All out: the budget is whole again.
        drop((first_written, second_written, third_written));
        futures_timer::Delay::new(Duration::from_millis(20)).await;
        let (fifth, _) = ask(three, vec![c.0, a.0]).await;
        assert_eq!(ids(fifth), [Some(c.0), Some(a.0)]);
        assert_eq!(counters.bytes_out.get(), 6000);
    }
}

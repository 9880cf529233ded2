//! The upload engine: place each stripe's shards on holders and send them, a bounded number of
//! batches in flight, retrying refused shards on the next holder.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::{LocalBoxFuture, join_all};
use futures::stream::{FuturesUnordered, StreamExt};

use super::Network;
use super::NetworkError;
use crate::Manifest;
use crate::codec::{ShardId, Stripe};
use crate::protocol::{ManifestOutcome, PutOutcome};

/// Batches of shards in flight at once unless told otherwise.
pub const DEFAULT_IN_FLIGHT: usize = 8;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// There is nobody to upload to.
    #[error("no holders to upload to")]
    NoHolders,
    /// Every holder refused or failed to store a shard.
    #[error("shard {id} could not be stored on any of the {tried} holders (last: {last})")]
    NotStored { id: ShardId, tried: usize, last: String },
    /// No holder stored the manifest, so the file could not be found.
    #[error("the manifest could not be stored on any of the {tried} holders (last: {last})")]
    ManifestNotStored { tried: usize, last: String },
}

/// Sends stripes to holders. Shard `i` of stripe `s` goes first to holder `(s + i) mod n`, so
/// that with n ≥ k + m holders no holder keeps two shards of one stripe, and with fewer each
/// keeps at most ⌈(k + m) / n⌉. A shard refused (full, failed, unreachable) moves on to the
/// next holder in turn. A holder that could not be reached (gone, connection dropped) is asked
/// last until it answers again, so that a relay that dies mid-upload costs one failed request,
/// not one (and a dial) for each stripe still to come.
pub struct Upload<N: Network> {
    net: N,
    holders: Vec<N::Peer>,
    /// Per holder, whether the last request to it could not reach it.
    down: Rc<RefCell<Vec<bool>>>,
    in_flight: FuturesUnordered<LocalBoxFuture<'static, Result<(u64, u64), UploadError>>>,
    max_in_flight: usize,
    max_batch: usize,
    wire_bytes: u64,
    /// Batches still in flight, per stripe.
    unacked: HashMap<u64, usize>,
    /// Stripes whose every shard a holder has acknowledged, not yet taken.
    acked: Vec<u64>,
}

impl<N: Network + Clone + 'static> Upload<N> {
    /// An upload to `holders`, in this order.
    pub fn new(net: N, holders: Vec<N::Peer>) -> Result<Self, UploadError> {
        if holders.is_empty() {
            return Err(UploadError::NoHolders);
        }
        Ok(Self {
            net,
            down: Rc::new(RefCell::new(vec![false; holders.len()])),
            holders,
            in_flight: FuturesUnordered::new(),
            max_in_flight: DEFAULT_IN_FLIGHT,
            max_batch: usize::MAX,
            wire_bytes: 0,
            unacked: HashMap::new(),
            acked: Vec::new(),
        })
    }

    /// The same upload with at most `n` (≥ 1) batches in flight.
    pub fn with_in_flight(self, n: usize) -> Self {
        Self { max_in_flight: n.max(1), ..self }
    }

    /// The same upload with at most `n` (≥ 1) shards per request. Each request is a stream of
    /// its own, and a stream's flow-control window bounds what it has in flight: over a link
    /// whose window updates are slow to come back (a browser's), more and smaller requests
    /// keep more bytes moving.
    pub fn with_max_batch(self, n: usize) -> Self {
        Self { max_batch: n.max(1), ..self }
    }

    /// Shard bytes acknowledged by holders so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// The stripes whose every shard has been acknowledged since the last call, in the order
    /// their last acknowledgement arrived.
    pub fn take_acked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acked)
    }

    /// Queues a stripe, waiting first while the in-flight limit is reached. Returns an error
    /// as soon as any earlier batch has failed on every holder.
    pub async fn send(&mut self, stripe: Stripe) -> Result<(), UploadError> {
        let n = self.holders.len();
        let offset = (stripe.index % n as u64) as usize;
        let mut batches: Vec<Vec<(ShardId, Bytes)>> = vec![Vec::new(); n];
        for (i, (id, shard)) in stripe.ids.into_iter().zip(stripe.shards).enumerate() {
            if let Some(batch) = batches.get_mut((offset + i) % n) {
                batch.push((id, shard));
            }
        }
        let index = stripe.index;
        let max = self.max_batch;
        let batches: Vec<(usize, Vec<(ShardId, Bytes)>)> = batches
            .into_iter()
            .enumerate()
            .flat_map(|(first, batch)| {
                let chunks: Vec<Vec<_>> = batch.chunks(max).map(<[_]>::to_vec).collect();
                chunks.into_iter().map(move |chunk| (first, chunk))
            })
            .collect();
        self.unacked.insert(index, batches.len());
        for (first, batch) in batches {
            while self.in_flight.len() >= self.max_in_flight {
                self.wait_one().await?;
            }
            let (net, holders, down) = (self.net.clone(), self.holders.clone(), self.down.clone());
            self.in_flight.push(Box::pin(async move {
                put_batch(&net, holders, &down, first, batch).await.map(|sent| (index, sent))
            }));
        }
        Ok(())
    }

    /// Waits for every queued shard, then stores the manifest on every holder not marked down
    /// (on those too if none of the others stored it). Succeeds when at least one holder stored
    /// the manifest; returns how many did.
    pub async fn finish(mut self, manifest: &Manifest) -> Result<usize, UploadError> {
        self.flush().await?;
        let bytes = manifest.bytes().clone();
        let (mut stored, mut last) = (0, String::from("no reply"));
        for down in [false, true] {
            if stored > 0 {
                break;
            }
            let holders: Vec<(usize, &N::Peer)> = (self.holders.iter().enumerate())
                .filter(|&(at, _)| is_down(&self.down, at) == down)
                .collect();
            let puts = holders.iter().map(|(_, h)| self.net.put_manifest(h, bytes.clone()));
            for ((at, holder), result) in holders.iter().zip(join_all(puts).await) {
                mark(&self.down, *at, &result);
                match result {
                    Ok(ManifestOutcome::Stored | ManifestOutcome::AlreadyHeld) => stored += 1,
                    Ok(other) => last = format!("{holder}: {other:?}"),
                    Err(e) => last = format!("{holder}: {e}"),
                }
            }
        }
        if stored == 0 {
            return Err(UploadError::ManifestNotStored { tried: self.holders.len(), last });
        }
        Ok(stored)
    }

    /// Waits until every queued shard is acknowledged, without storing the manifest.
    pub async fn flush(&mut self) -> Result<(), UploadError> {
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), UploadError> {
        if let Some(result) = self.in_flight.next().await {
            let (stripe, sent) = result?;
            self.wire_bytes += sent;
            if let Some(left) = self.unacked.get_mut(&stripe) {
                *left -= 1;
                if *left == 0 {
                    self.unacked.remove(&stripe);
                    self.acked.push(stripe);
                }
            }
        }
        Ok(())
    }
}

impl<N: Network> std::fmt::Debug for Upload<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("holders", &self.holders)
            .field("in_flight", &self.in_flight.len())
            .field("wire_bytes", &self.wire_bytes)
            .finish()
    }
}

/// Puts `pending` on holder `first`, moving whatever it does not store on to the next holders;
/// holders marked `down` come last. A holder that cannot be reached is marked down, and one
/// that answers is marked up again.
async fn put_batch<N: Network>(
    net: &N,
    holders: Vec<N::Peer>,
    down: &RefCell<Vec<bool>>,
    first: usize,
    mut pending: Vec<(ShardId, Bytes)>,
) -> Result<u64, UploadError> {
    let mut sent = 0u64;
    let mut last = String::new();
    let n = holders.len();
    let mut order: Vec<usize> = (0..n).map(|attempt| (first + attempt) % n).collect();
    order.sort_by_key(|&at| is_down(down, at));
    for at in order {
        let Some(peer) = holders.get(at) else { break };
        let reply = net.put_shards(peer, pending.clone()).await;
        mark(down, at, &reply);
        match reply {
            Ok(outcomes) if outcomes.len() == pending.len() => {
                let mut refused = Vec::new();
                for ((id, bytes), outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        PutOutcome::Stored | PutOutcome::AlreadyHeld => sent += bytes.len() as u64,
                        other => {
                            last = format!("{peer}: {other}");
                            refused.push((id, bytes));
                        }
                    }
                }
                pending = refused;
            }
            Ok(_) => last = format!("{peer} sent the wrong number of outcomes"),
            Err(e) => last = format!("{peer}: {e}"),
        }
        if pending.is_empty() {
            return Ok(sent);
        }
    }
    let id = pending.first().map_or(ShardId([0; 32]), |(id, _)| *id);
    Err(UploadError::NotStored { id, tried: holders.len(), last })
}

fn is_down(down: &RefCell<Vec<bool>>, at: usize) -> bool {
    down.borrow().get(at).copied().unwrap_or(false)
}

/// Marks holder `at` down when `reply` says it could not be reached, up when it answered.
fn mark<T>(down: &RefCell<Vec<bool>>, at: usize, reply: &Result<T, NetworkError>) {
    let unreachable = matches!(reply, Err(NetworkError::Unreachable { .. }));
    if let Some(d) = down.borrow_mut().get_mut(at) {
        *d = unreachable;
    }
}

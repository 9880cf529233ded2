//! The browser node's view of the network for the engines: this browser's own store is one
//! holder among the others, so a download takes what is held here first and fetches the rest.
//! Shards fetched from others are verified and kept, so that this browser can serve them on.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use bytes::Bytes;
use libp2p::PeerId;
use shardweb_core::manifest::SigningKey;
use shardweb_core::node::peer::Peer;
use shardweb_core::node::{Fetched, Network, NetworkError};
use shardweb_core::protocol::{MAX_HTTP_BATCH, ManifestOutcome, PutOutcome, ShardStatus};
use shardweb_core::{Manifest, ManifestId, ShardId};

use crate::error::NodeError;
use crate::http_shards;
use crate::idb_store::IdbStore;

/// Where a shard or manifest may be: here, or at another peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// This browser's IndexedDB.
    Local,
    /// A relay or another browser.
    Remote(PeerId),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Local => f.write_str("this browser"),
            Holder::Remote(peer) => write!(f, "{peer}"),
        }
    }
}

/// Counters the node reports in its stats.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes of good shards received from other peers (corrupt ones are not counted).
    pub bytes_in: Cell<u64>,
    /// Shard bytes sent to other peers (uploads and serving).
    pub bytes_out: Cell<u64>,
    /// Requests from other peers answered.
    pub served: Cell<u64>,
}

impl Counters {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().saturating_add(n));
    }
}

/// The engines' network in the browser.
#[derive(Debug, Clone)]
pub struct BrowserNet {
    pub(crate) peer: Peer,
    pub(crate) store: Rc<IdbStore>,
    pub(crate) counters: Rc<Counters>,
    /// Keeps shards fetched from others here, or not.
    keeper: Rc<Keeper>,
    /// Relays that serve or take shards over HTTP, and where.
    http: Rc<RefCell<HashMap<PeerId, HttpRoutes>>>,
    /// The key that signs puts over HTTP: this node's identity.
    signer: Rc<SigningKey>,
}

/// Where a relay serves shards over HTTP, and where it takes them; `None` where it does not
/// (or no longer: after a failure, until it is connected again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRoutes {
    /// The URL to which a shard id is appended to fetch it.
    pub get: Option<String>,
    /// The URL to which shard ids joined by commas are appended to fetch them in one reply.
    pub batch: Option<String>,
    /// The URL to which puts are posted.
    pub put: Option<String>,
}

/// Bytes of fetched shards that may wait for their write before fetches wait for them.
const MAX_PENDING_BYTES: usize = 16 << 20;

/// Writes the shards a download fetches to the store, in the background and in as few
/// transactions as the store's pace allows: the shards that arrive while one write is under
/// way go together in the next. Fetches wait only while more than [`MAX_PENDING_BYTES`] wait.
/// When the store is full it stops keeping (and says so), without failing the download.
#[derive(Debug, Default)]
struct Keeper {
    /// Whether shards are kept.
    on: Cell<bool>,
    pending: RefCell<Vec<(ShardId, Bytes)>>,
    pending_bytes: Cell<usize>,
    /// Whether a write task runs.
    writing: Cell<bool>,
    /// Whether shards handed over were not written (a full store, a failed write).
    lost: Cell<bool>,
    /// Whether the download has ended: what its fetches still bring is not kept.
    closed: Cell<bool>,
    /// Woken whenever the write task takes what waits, and when it ends.
    waiters: RefCell<Vec<futures::channel::oneshot::Sender<()>>>,
    /// The transfer whose shards these are, which notes what each write adds (so that
    /// cancelling it removes them), and the writes so far.
    transfer: Option<String>,
    writes: Cell<u64>,
}

impl Keeper {
    fn new(on: bool, transfer: Option<String>) -> Self {
        Self { on: Cell::new(on), transfer, ..Self::default() }
    }

    /// Hands `shards` to the write task; waits first while too many bytes wait.
    async fn keep(self: &Rc<Self>, store: &Rc<IdbStore>, shards: Vec<(ShardId, Bytes)>) {
        while self.on.get() && self.pending_bytes.get() >= MAX_PENDING_BYTES {
            self.changed().await;
        }
        if shards.is_empty() || self.closed.get() {
            return;
        }
        if !self.on.get() {
            self.lost.set(true);
            return;
        }
        let bytes: usize = shards.iter().map(|(_, b)| b.len()).sum();
        self.pending_bytes.set(self.pending_bytes.get() + bytes);
        self.pending.borrow_mut().extend(shards);
        if !self.writing.replace(true) {
            wasm_bindgen_futures::spawn_local(Rc::clone(self).write(Rc::clone(store)));
        }
    }

    /// Writes whatever waits, one transaction at a time, until nothing does.
    async fn write(self: Rc<Self>, store: Rc<IdbStore>) {
        loop {
            let batch = std::mem::take(&mut *self.pending.borrow_mut());
            self.pending_bytes.set(0);
            self.wake();
            if batch.is_empty() {
                break;
            }
            if !self.on.get() {
                self.lost.set(true);
                continue;
            }
            let written = match &self.transfer {
                Some(transfer) => {
                    let part = self.writes.replace(self.writes.get() + 1);
                    store.put_transfer_shards(transfer, part, &batch).await
                }
                None => store.put_own_shards(&batch).await,
            };
            match written {
                Ok(_) => {}
                Err(NodeError::QuotaExceeded { detail }) => {
                    tracing::warn!(%detail, "the store is full: downloaded shards are no longer kept");
                    self.on.set(false);
                    self.lost.set(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep downloaded shards");
                    self.lost.set(true);
                }
            }
        }
        self.writing.set(false);
        self.wake();
    }

    /// Resolves once every shard handed over has been written or given up: true if all
    /// were written.
    async fn flushed(&self) -> bool {
        while self.writing.get() {
            self.changed().await;
        }
        !self.lost.get()
    }

    fn wake(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    async fn changed(&self) {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.waiters.borrow_mut().push(tx);
        let _ = rx.await;
    }
}

impl BrowserNet {
    /// The network over `peer` and `store`, signing its puts over HTTP with `signer`.
    pub fn new(
        peer: Peer,
        store: Rc<IdbStore>,
        counters: Rc<Counters>,
        signer: SigningKey,
    ) -> Self {
        let keeper = Rc::new(Keeper::new(false, None));
        Self { peer, store, counters, keeper, http: Rc::default(), signer: Rc::new(signer) }
    }

    /// Fetches shards from `relay` and puts them to it over HTTP where `routes` say, from now
    /// on (see [`http_shards`]); over libp2p otherwise.
    pub fn shards_over_http(&self, relay: PeerId, routes: HttpRoutes) {
        if routes == HttpRoutes::default() {
            self.http.borrow_mut().remove(&relay);
        } else {
            self.http.borrow_mut().insert(relay, routes);
        }
    }

    /// The same network, keeping (or not) the shards it fetches for transfer `transfer`, which
    /// notes what its writes add. The setting, and the writes under way, are this clone's and
    /// its own clones'.
    pub fn keeping(&self, keep: bool, transfer: &str) -> Self {
        Self { keeper: Rc::new(Keeper::new(keep, Some(transfer.to_owned()))), ..self.clone() }
    }

    /// Resolves once the shards this network fetched are all written to the store or given
    /// up (when it is full, or a write failed): true if every one was written.
    pub async fn kept(&self) -> bool {
        self.keeper.flushed().await
    }

    /// Keeps nothing more: for a download that has ended. Its fetches still out run in tasks
    /// of their own, and what they bring is surplus (every shard the download used was handed
    /// over before the download saw it); kept, it would land after the download stopped
    /// counting as running, maybe after its record and notes were removed, and nothing would
    /// ever free it. What was handed over before is still written: see [`BrowserNet::kept`].
    pub fn stop_keeping(&self) {
        self.keeper.closed.set(true);
    }

    /// Fetches shards from a relay (over HTTP where it serves them so) or another browser,
    /// checks each against its id and keeps the good ones, if keeping: each shard is hashed
    /// once, on arrival, and the download engine takes it without hashing it again.
    async fn fetch_and_keep(
        &self,
        peer: PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        let fetched = match self.fetch_over_http(peer, &ids).await {
            Some(fetched) => fetched?,
            None => {
                // A request per shard, all at once, as puts go (see `put_shards`).
                let gets = ids.into_iter().map(|id| self.peer.get_shards(&peer, vec![id]));
                let mut fetched = Vec::new();
                for got in futures::future::join_all(gets).await {
                    fetched.extend(got?);
                }
                fetched
            }
        };
        let bytes: u64 = fetched
            .iter()
            .map(|f| if let Fetched::Verified(s) = f { s.bytes().len() as u64 } else { 0 })
            .sum();
        Counters::add(&self.counters.bytes_in, bytes);
        self.keep_fetched(&fetched).await;
        Ok(fetched)
    }

    /// Fetches shards from `peer` over HTTP, if it serves them so; `None` to ask over libp2p.
    /// A relay whose HTTP fails is asked over libp2p from then on, until it is connected
    /// again. Shards that HTTP says are not there are asked over libp2p too: the URL is not
    /// authenticated as the peer's (a proxy in front of it, or another server, may answer).
    async fn fetch_over_http(
        &self,
        peer: PeerId,
        ids: &[ShardId],
    ) -> Option<Result<Vec<Fetched>, NetworkError>> {
        let statuses = self.statuses_over_http(peer, ids).await?;
        let mut fetched = match Fetched::check_all(ids, statuses) {
            Ok(fetched) => fetched,
            Err(e) => return Some(Err(e)),
        };
        let missing: Vec<usize> =
            (0..ids.len()).filter(|&i| fetched[i] == Fetched::Missing).collect();
        if !missing.is_empty() {
            let again = missing.iter().map(|&i| ids[i]).collect();
            match self.peer.get_shards(&peer, again).await {
                Ok(found) => missing.into_iter().zip(found).for_each(|(i, f)| fetched[i] = f),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(fetched))
    }

    /// The statuses of `ids` at `peer` over HTTP, not yet checked: in batches where it serves
    /// them so, else a request per shard; `None` where it serves neither (any longer). A
    /// route that fails (other than by a timeout, for batches) is not used again until the
    /// relay is connected again: a failed batch is asked again a shard per request, and a
    /// failed shard request over libp2p.
    async fn statuses_over_http(&self, peer: PeerId, ids: &[ShardId]) -> Option<Vec<ShardStatus>> {
        let (get, batch) = {
            let http = self.http.borrow();
            let routes = http.get(&peer)?;
            (routes.get.clone(), routes.batch.clone())
        };
        if let Some(batch) = batch {
            let gets = ids.chunks(MAX_HTTP_BATCH).map(|ids| http_shards::get_batch(&batch, ids));
            match futures::future::join_all(gets).await.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(statuses) => return Some(statuses.concat()),
                // A batch that came too slowly is asked again a shard at a time, and the next
                // ones go in batches still: a slow link is no reason to give up the route.
                Err(NetworkError::Timeout) => {
                    tracing::debug!(%peer, "a shard batch over HTTP timed out; asking a shard at a time");
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "shard batches over HTTP failed; asking a shard at a time");
                    if let Some(routes) = self.http.borrow_mut().get_mut(&peer) {
                        routes.batch = None;
                    }
                }
            }
        }
        match http_shards::get_shards(&get?, ids).await {
            Ok(statuses) => Some(statuses),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "shards over HTTP failed; asking over libp2p");
                if let Some(routes) = self.http.borrow_mut().get_mut(&peer) {
                    routes.get = None;
                }
                None
            }
        }
    }

    /// Puts shards to `peer` over HTTP, if it takes them so; `None` to put over libp2p. A relay
    /// whose HTTP fails (or refuses: a clock too far from the relay's, a proxy in the way) is
    /// sent puts over libp2p from then on, until it is connected again; the shards of the
    /// failed put go over libp2p at once (a put repeated changes nothing).
    async fn put_over_http(
        &self,
        peer: PeerId,
        shards: &[(ShardId, Bytes)],
    ) -> Option<Vec<PutOutcome>> {
        let url = self.http.borrow().get(&peer)?.put.clone()?;
        let puts = by_bytes(shards, HTTP_PUT_BYTES)
            .map(|group| http_shards::put_shards(&url, &peer, &self.signer, group));
        match futures::future::join_all(puts).await.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(outcomes) => Some(outcomes.concat()),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "puts over HTTP failed; putting over libp2p");
                if let Some(routes) = self.http.borrow_mut().get_mut(&peer) {
                    routes.put = None;
                }
                None
            }
        }
    }

    /// Keeps verified shards fetched from another peer, if keeping (see [`Keeper`]).
    async fn keep_fetched(&self, fetched: &[Fetched]) {
        if !self.keeper.on.get() {
            return;
        }
        let found: Vec<(ShardId, Bytes)> = fetched
            .iter()
            .filter_map(|f| match f {
                Fetched::Verified(shard) => Some((shard.id(), shard.bytes().clone())),
                _ => None,
            })
            .collect();
        self.keeper.keep(&self.store, found).await;
    }
}

/// The most shard bytes one HTTP put carries (a lone larger shard goes alone): a stripe of
/// the default layout goes in one request. A `fetch` costs its thread about as much as
/// copying a few hundred KiB more of body, so fewer and larger puts leave it more time to
/// code (a 256 MiB put, one 4 MiB stripe per request against one 1 MiB shard: 2.3-2.9 s of
/// the node's thread against 2.7-3.1 s).
const HTTP_PUT_BYTES: usize = 8 << 20;

/// `shards` in runs of consecutive shards of at most `max` bytes together, each at least one
/// shard long.
fn by_bytes(
    shards: &[(ShardId, Bytes)],
    max: usize,
) -> impl Iterator<Item = &[(ShardId, Bytes)]> + '_ {
    let mut rest = shards;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|(_, b)| {
                bytes += b.len();
                bytes <= max
            })
            .count()
            .max(1);
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

fn local(e: NodeError) -> NetworkError {
    NetworkError::Unreachable { detail: format!("this browser's store: {e}") }
}

impl Network for BrowserNet {
    type Peer = Holder;

    async fn put_shards(
        &self,
        holder: &Holder,
        shards: Vec<(ShardId, Bytes)>,
    ) -> Result<Vec<PutOutcome>, NetworkError> {
        match holder {
            // The upload engine's shards, named by the encoder from these bytes.
            Holder::Local => match self.store.put_own_shards(&shards).await {
                Ok(fresh) => Ok(fresh
                    .into_iter()
                    .map(|new| if new { PutOutcome::Stored } else { PutOutcome::AlreadyHeld })
                    .collect()),
                Err(NodeError::QuotaExceeded { .. }) => Ok(vec![PutOutcome::NoSpace; shards.len()]),
                Err(e) => Err(local(e)),
            },
            Holder::Remote(peer) => {
                let bytes: u64 = shards.iter().map(|(_, b)| b.len() as u64).sum();
                let outcomes = match self.put_over_http(*peer, &shards).await {
                    Some(outcomes) => outcomes,
                    None => {
                        // A request per shard, all at once: each is a stream of its own, and
                        // a stream's flow-control window bounds what it has in flight, so
                        // more and smaller requests keep more bytes moving from a browser.
                        let puts = shards.into_iter().map(|s| self.peer.put_shards(peer, vec![s]));
                        let mut outcomes = Vec::new();
                        for put in futures::future::join_all(puts).await {
                            outcomes.extend(put?);
                        }
                        outcomes
                    }
                };
                Counters::add(&self.counters.bytes_out, bytes);
                Ok(outcomes)
            }
        }
    }

    async fn get_shards(
        &self,
        holder: &Holder,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        match holder {
            // Checked as the store reads them (and dropped there if corrupt).
            Holder::Local => {
                let found = self.store.get_verified_shards(&ids).await.map_err(local)?;
                Ok(found
                    .into_iter()
                    .map(|s| s.map_or(Fetched::Missing, Fetched::Verified))
                    .collect())
            }
            Holder::Remote(peer) => {
                // In a task of its own: the download engine polls its requests only while it
                // waits for the next stripe, and a reply that has arrived should reach the
                // store then, not when the reader next asks (a reload in between would lose
                // it and fetch it again).
                let (done, reply) = futures::channel::oneshot::channel();
                let (net, peer) = (self.clone(), *peer);
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = done.send(net.fetch_and_keep(peer, ids).await);
                });
                reply.await.unwrap_or_else(|_| {
                    Err(NetworkError::Unreachable { detail: "the node stopped".into() })
                })
            }
        }
    }

    async fn has_shards(
        &self,
        holder: &Holder,
        ids: Vec<ShardId>,
    ) -> Result<Vec<bool>, NetworkError> {
        match holder {
            Holder::Local => self.store.has_shards(&ids).await.map_err(local),
            Holder::Remote(peer) => self.peer.has_shards(peer, ids).await,
        }
    }

    async fn put_manifest(
        &self,
        holder: &Holder,
        manifest: Bytes,
    ) -> Result<ManifestOutcome, NetworkError> {
        match holder {
            Holder::Local => {
                let Ok(decoded) = Manifest::decode(&manifest) else {
                    return Ok(ManifestOutcome::Invalid);
                };
                self.store.put_manifest(decoded.id(), &manifest).await.map_err(local)?;
                Ok(ManifestOutcome::Stored)
            }
            Holder::Remote(peer) => self.peer.put_manifest(peer, manifest).await,
        }
    }

    async fn get_manifest(
        &self,
        holder: &Holder,
        id: ManifestId,
    ) -> Result<Option<Bytes>, NetworkError> {
        match holder {
            Holder::Local => self.store.get_manifest(id).await.map_err(local),
            Holder::Remote(peer) => self.peer.get_manifest(peer, id).await,
        }
    }
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use futures::future::join_all;
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    fn shard(seed: u8, len: usize) -> (ShardId, Bytes) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(29) ^ seed).collect();
        (ShardId::of(&bytes), Bytes::from(bytes))
    }

    async fn store(test: &str, max: Option<u64>) -> Rc<IdbStore> {
        let name = format!("shardweb-test-{test}-{}", js_sys::Math::random());
        Rc::new(IdbStore::open(&name, max).await.unwrap())
    }

    /// HTTP puts are cut by bytes: every shard once, in order, no run over the limit unless a
    /// lone shard is.
    #[wasm_bindgen_test]
    fn puts_are_cut_into_runs_of_at_most_so_many_bytes() {
        let lens = [3, 4, 2, 9, 1, 1, 5];
        let shards: Vec<_> = lens.iter().enumerate().map(|(i, &n)| shard(i as u8, n)).collect();
        let runs: Vec<Vec<usize>> =
            by_bytes(&shards, 6).map(|run| run.iter().map(|(_, b)| b.len()).collect()).collect();
        assert_eq!(runs, [vec![3], vec![4, 2], vec![9], vec![1, 1], vec![5]]);
        assert_eq!(by_bytes(&shards, 100).count(), 1);
        assert_eq!(by_bytes(&shards[..0], 6).count(), 0);
        let whole: Vec<_> = by_bytes(&shards, 6).flatten().cloned().collect();
        assert!(whole == shards);
    }

    /// Shards handed over by many fetches at once are all written, with the fetches held back
    /// while too many bytes wait, and `flushed` waits for the last write.
    #[wasm_bindgen_test]
    async fn a_keeper_writes_every_shard_it_is_handed_and_holds_fetches_back() {
        let store = store("keeper", None).await;
        let keeper = Rc::new(Keeper::new(true, None));
        let shards: Vec<_> = (0..24).map(|i| shard(i, 1 << 20)).collect();
        let most = Cell::new(0);
        join_all(shards.iter().map(|s| async {
            keeper.keep(&store, vec![s.clone()]).await;
            most.set(most.get().max(keeper.pending_bytes.get()));
        }))
        .await;
        assert!(most.get() <= MAX_PENDING_BYTES + (1 << 20), "{} bytes waited", most.get());
        assert!(keeper.flushed().await, "a shard was not written");
        assert!(!keeper.writing.get() && keeper.pending.borrow().is_empty());
        let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
        let got = store.get_shards(&ids).await.unwrap();
        let want: Vec<Option<Bytes>> = shards.into_iter().map(|(_, b)| Some(b)).collect();
        assert!(got == want, "a kept shard is missing or differs");
    }

    /// A full store stops the keeping without failing anyone: what was written before stays,
    /// nothing of the refused batch is kept, and the keeper says that not all was kept.
    #[wasm_bindgen_test]
    async fn a_full_store_stops_the_keeping() {
        let store = store("keeper-full", Some(3 << 20)).await;
        let keeper = Rc::new(Keeper::new(true, None));
        let shards: Vec<_> = (0..5).map(|i| shard(i, 1 << 20)).collect();
        // One shard per write: the fourth is refused and the fifth is not even tried.
        for (i, s) in shards.iter().enumerate() {
            keeper.keep(&store, vec![s.clone()]).await;
            assert_eq!(keeper.flushed().await, i < 3, "shard {i}");
        }
        assert!(!keeper.on.get(), "the keeping went on past a full store");
        let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
        let held = store.has_shards(&ids).await.unwrap();
        assert_eq!(held, [true, true, true, false, false]);
        assert_eq!(store.usage().await.unwrap(), (3 << 20, 3));
        assert!(!keeper.writing.get() && keeper.pending.borrow().is_empty());
    }
}

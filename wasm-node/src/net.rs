//! The browser node's view of the network for the engines: this browser's own store is one
//! holder among the others, so a download takes what is held here first and fetches the rest.
//! Shards fetched from others are verified and kept, so that this browser can serve them on.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use bytes::Bytes;
use libp2p::PeerId;
use shardweb_core::node::peer::Peer;
use shardweb_core::node::{Fetched, Network, NetworkError};
use shardweb_core::protocol::{ManifestOutcome, PutOutcome};
use shardweb_core::{Manifest, ManifestId, ShardId};

use crate::error::NodeError;
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
    /// Whether shards fetched from others are kept here.
    keep: Rc<Cell<bool>>,
    /// Writes of fetched shards under way in the background.
    keeping: Rc<Cell<usize>>,
}

/// Writes of fetched shards that may run behind the download before it waits for them.
const KEEPS_IN_FLIGHT: usize = 2;

impl BrowserNet {
    /// The network over `peer` and `store`.
    pub fn new(peer: Peer, store: Rc<IdbStore>, counters: Rc<Counters>) -> Self {
        Self {
            peer,
            store,
            counters,
            keep: Rc::new(Cell::new(false)),
            keeping: Rc::new(Cell::new(0)),
        }
    }

    /// The same network, keeping (or not) the shards it fetches. The setting is this clone's
    /// and its own clones'.
    pub fn keeping(&self, keep: bool) -> Self {
        Self { keep: Rc::new(Cell::new(keep)), ..self.clone() }
    }

    /// Fetches shards from a relay or another browser (the peer checks each against its id)
    /// and keeps the good ones, if keeping: each shard is hashed once, on arrival, and the
    /// download engine takes it without hashing it again.
    async fn fetch_and_keep(
        &self,
        peer: PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        let fetched = self.peer.get_shards(&peer, ids).await?;
        let bytes: u64 = fetched
            .iter()
            .map(|f| if let Fetched::Verified(s) = f { s.bytes().len() as u64 } else { 0 })
            .sum();
        Counters::add(&self.counters.bytes_in, bytes);
        self.keep_fetched(&fetched).await;
        Ok(fetched)
    }

    /// Keeps verified shards fetched from another peer, in the background while few writes
    /// are under way; stops keeping (and says so) when the store is full, without failing the
    /// download.
    async fn keep_fetched(&self, fetched: &[Fetched]) {
        if !self.keep.get() {
            return;
        }
        let found: Vec<(ShardId, Bytes)> = fetched
            .iter()
            .filter_map(|f| match f {
                Fetched::Verified(shard) => Some((shard.id(), shard.bytes().clone())),
                _ => None,
            })
            .collect();
        if found.is_empty() {
            return;
        }
        // Counted before it is spawned, so that several replies in one turn do not all go to
        // the background; uncounted when done or dropped.
        let counted = Counted::new(&self.keeping);
        let (store, keep) = (Rc::clone(&self.store), Rc::clone(&self.keep));
        let write = async move {
            let _counted = counted;
            match store.put_own_shards(&found).await {
                Ok(_) => {}
                Err(NodeError::QuotaExceeded { detail }) => {
                    tracing::warn!(%detail, "the store is full: downloaded shards are no longer kept");
                    keep.set(false);
                }
                Err(e) => tracing::warn!(error = %e, "cannot keep downloaded shards"),
            }
        };
        if self.keeping.get() <= KEEPS_IN_FLIGHT {
            wasm_bindgen_futures::spawn_local(write);
        } else {
            write.await;
        }
    }
}

/// One unit of a counter, from its creation until it is dropped.
struct Counted(Rc<Cell<usize>>);

impl Counted {
    fn new(counter: &Rc<Cell<usize>>) -> Self {
        counter.set(counter.get() + 1);
        Self(Rc::clone(counter))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
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
                let outcomes = self.peer.put_shards(peer, shards).await?;
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

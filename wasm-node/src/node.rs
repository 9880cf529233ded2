//! The browser node: its store, its libp2p peer, the relays it keeps connections and
//! reservations with, and the events it reports to the page.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::join_all;
use js_sys::{Function, Object, Reflect};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shardweb_core::node::peer::{self, Event, Peer};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

use crate::error::NodeError;
use crate::http_shards;
use crate::idb_store::IdbStore;
use crate::net::{BrowserNet, Counters, HttpRoutes};
use crate::relays::{self, Relay};
use crate::serve::{MAX_SERVING_BYTES, serve};

/// The longest wait between two attempts to reach a relay that went away: short enough that
/// a relay back within 20 s or so is reached again while a download still waits for it (see
/// `shardweb_core::node::Retries`), and one try costs a failed request for `/api/info`.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a node starts.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct NodeOptions {
    /// Relay URLs to bootstrap from (their `/api/info`).
    pub relays: Vec<String>,
    /// The IndexedDB database name: one store per name.
    pub store_name: String,
    /// A cap on the bytes of shards this node keeps, besides the browser's own quota.
    pub max_store_bytes: Option<f64>,
    /// The log level for the browser console: error, warn, info, debug or trace.
    pub log_level: String,
    /// Whether shards are downloaded from relays and put to them over HTTP where they serve
    /// and take them so (the default); if not, every transfer goes over libp2p.
    pub shards_over_http: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            store_name: "shardweb".into(),
            max_store_bytes: None,
            log_level: "warn".into(),
            shards_over_http: true,
        }
    }
}

/// A running browser node.
#[derive(Debug)]
pub struct Node {
    pub(crate) peer: Peer,
    pub(crate) store: Rc<IdbStore>,
    pub(crate) net: BrowserNet,
    pub(crate) counters: Rc<Counters>,
    key: Keypair,
    relays: RefCell<Vec<Relay>>,
    on_event: Option<Function>,
    stopped: Cell<bool>,
    /// Whether shards come from relays and go to them over HTTP where they allow it.
    shards_over_http: bool,
    /// Transfers running now, by id.
    pub(crate) active: RefCell<Vec<String>>,
    /// Downloads of this tab whose stream ended short, still writing what they fetched, until
    /// their transfer's lock is free (see `download::open`).
    pub(crate) leaving: RefCell<Vec<String>>,
    /// Relays a reservation is being asked of.
    reserving: RefCell<Vec<PeerId>>,
}

impl Node {
    /// Opens the store, starts the peer and connects to the relays given; fails if relays were
    /// given and none could be reached.
    pub async fn start(
        options: NodeOptions,
        on_event: Option<Function>,
    ) -> Result<Rc<Self>, NodeError> {
        let max = match options.max_store_bytes {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n as u64),
            Some(n) => {
                return Err(NodeError::invalid(format!("maxStoreBytes {n} is not a byte count")));
            }
            None => None,
        };
        let store = Rc::new(IdbStore::open(&options.store_name, max).await?);
        let key = Keypair::generate_ed25519();
        let agent = format!("shardweb-browser/{}", env!("CARGO_PKG_VERSION"));
        let swarm = relays::swarm(key.clone(), &peer::Config::new(agent, true))?;
        let (peer, driver, incoming) = Peer::new(swarm);
        spawn_local(driver.run());
        let counters = Rc::new(Counters::default());
        let node = Rc::new(Self {
            net: BrowserNet::new(
                peer.clone(),
                Rc::clone(&store),
                Rc::clone(&counters),
                signing_key(&key)?,
            ),
            peer,
            store: Rc::clone(&store),
            counters: Rc::clone(&counters),
            key,
            relays: RefCell::new(Vec::new()),
            on_event,
            stopped: Cell::new(false),
            shards_over_http: options.shards_over_http,
            active: RefCell::new(Vec::new()),
            leaving: RefCell::new(Vec::new()),
            reserving: RefCell::new(Vec::new()),
        });
        spawn_local(serve(store, counters, incoming.requests, MAX_SERVING_BYTES));
        spawn_local(watch(Rc::downgrade(&node), incoming.events));
        let attempts = join_all(options.relays.iter().map(|url| node.connect(url))).await;
        let mut last = None;
        for (url, attempt) in options.relays.iter().zip(attempts) {
            if let Err(e) = attempt {
                tracing::warn!(relay = %url, error = %e, "cannot reach relay");
                last = Some(e);
            }
        }
        if node.relays.borrow().is_empty()
            && let Some(e) = last
        {
            node.stop().await;
            return Err(e);
        }
        Ok(node)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer.id()
    }

    /// The Ed25519 key that signs this node's manifests (its libp2p identity).
    pub fn signing_key(&self) -> Result<shardweb_core::manifest::SigningKey, NodeError> {
        signing_key(&self.key)
    }

    /// The relays known, connected or not.
    pub fn relays(&self) -> Vec<Relay> {
        self.relays.borrow().clone()
    }

    /// The peer ids of the relays connected now.
    pub fn connected_relays(&self) -> Vec<PeerId> {
        self.relays.borrow().iter().filter(|r| r.connected).map(|r| r.peer).collect()
    }

    /// Whether [`Node::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Reads a relay's info, dials it, reserves a circuit slot on it and announces the files
    /// held here.
    pub async fn connect(&self, url: &str) -> Result<(), NodeError> {
        let info = relays::info(url).await?;
        let relay: PeerId = info.peer_id.parse().map_err(|_| NodeError::NoRelays {
            detail: format!("{url} sent a malformed peer id"),
        })?;
        let routes = match self.shards_over_http {
            true => HttpRoutes {
                get: info.shard_http_path.as_ref().and_then(|p| http_shards::base_url(url, p)),
                batch: (info.shard_batch_http_path.as_ref())
                    .and_then(|p| http_shards::base_url(url, p)),
                put: info.shard_put_http_path.as_ref().and_then(|p| http_shards::put_url(url, p)),
            },
            false => HttpRoutes::default(),
        };
        self.net.shards_over_http(relay, routes);
        let addrs = relays::browser_addrs(&info, relay, url);
        if addrs.is_empty() {
            return Err(NodeError::NoRelays {
                detail: format!("{url} lists no address a browser can dial"),
            });
        }
        let mut last = String::new();
        for addr in addrs {
            match self.peer.dial(relay, vec![addr.clone()]).await {
                Ok(()) => {
                    self.upsert(Relay {
                        url: url.to_owned(),
                        peer: relay,
                        addr,
                        circuit: None,
                        connected: true,
                    });
                    self.emit("relay", &[("url", url.into()), ("connected", true.into())]);
                    self.reserve(relay).await;
                    return Ok(());
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(NodeError::NoRelays { detail: format!("cannot connect to {url} ({last})") })
    }

    fn upsert(&self, relay: Relay) {
        let mut relays = self.relays.borrow_mut();
        match relays.iter_mut().find(|r| r.peer == relay.peer) {
            Some(known) => *known = relay,
            None => relays.push(relay),
        }
    }

    /// Asks `relay` for a reservation and, once granted, announces the files held here.
    async fn reserve(&self, relay: PeerId) {
        let Some(addr) =
            self.relays.borrow().iter().find(|r| r.peer == relay).map(|r| r.addr.clone())
        else {
            return;
        };
        // One request at a time per relay.
        if self.reserving.borrow().contains(&relay) {
            return;
        }
        self.reserving.borrow_mut().push(relay);
        let listened = self.peer.listen(addr.with(Protocol::P2pCircuit)).await;
        self.reserving.borrow_mut().retain(|r| *r != relay);
        match listened {
            Ok(circuit) => {
                tracing::info!(%circuit, "reachable through a relay");
                if let Some(r) = self.relays.borrow_mut().iter_mut().find(|r| r.peer == relay) {
                    r.circuit = Some(circuit.clone());
                }
                self.emit("reachable", &[("address", circuit.to_string().into())]);
                self.announce().await;
            }
            Err(e) => tracing::warn!(%relay, error = %e, "the relay granted no reservation"),
        }
    }

    /// Announces in the DHT every manifest held here, so that others find this browser.
    pub async fn announce(&self) {
        match self.store.manifest_ids().await {
            Ok(ids) => {
                for id in ids {
                    let _ = self.peer.provide(id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the manifests held"),
        }
    }

    /// Calls the page's event handler with `{ type, ...fields }`.
    pub(crate) fn emit(&self, kind: &str, fields: &[(&str, JsValue)]) {
        let Some(handler) = &self.on_event else { return };
        let event = Object::new();
        let _ = Reflect::set(&event, &"type".into(), &kind.into());
        for (key, value) in fields {
            let _ = Reflect::set(&event, &(*key).into(), value);
        }
        if let Err(e) = handler.call1(&JsValue::NULL, &event) {
            tracing::debug!(error = %crate::error::describe(&e), "the event handler threw");
        }
    }

    /// Stops the peer; transfers in progress fail with [`NodeError::Stopped`].
    pub async fn stop(&self) {
        self.stopped.set(true);
        self.peer.stop().await;
    }

    fn relay_of(&self, peer: &PeerId) -> Option<Relay> {
        self.relays.borrow().iter().find(|r| r.peer == *peer).cloned()
    }

    fn set_connected(&self, peer: &PeerId, connected: bool) {
        if let Some(r) = self.relays.borrow_mut().iter_mut().find(|r| r.peer == *peer) {
            r.connected = connected;
            if !connected {
                r.circuit = None;
            }
        }
    }
}

/// Follows the peer's events: reports them to the page and reconnects to relays that went
/// away, backing off up to [`MAX_BACKOFF`].
async fn watch(node: Weak<Node>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.next().await {
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        match event {
            Event::Connected { peer, addr } => {
                if node.relay_of(&peer).is_none() {
                    node.emit(
                        "peer",
                        &[
                            ("peerId", peer.to_string().into()),
                            ("connected", true.into()),
                            ("address", addr.to_string().into()),
                        ],
                    );
                }
            }
            Event::Disconnected { peer } => match node.relay_of(&peer) {
                Some(relay) => {
                    node.set_connected(&peer, false);
                    node.emit(
                        "relay",
                        &[("url", relay.url.clone().into()), ("connected", false.into())],
                    );
                    spawn_local(reconnect(Rc::downgrade(&node), relay.url));
                }
                None => node.emit(
                    "peer",
                    &[("peerId", peer.to_string().into()), ("connected", false.into())],
                ),
            },
            Event::ListenClosed { addr } => {
                node.emit("unreachable", &[("address", addr.to_string().into())]);
                // Asked for again beside this loop, which goes on reading events meanwhile
                // (the driver drops those it cannot queue).
                if let Some(relay) = relay_in(&addr).and_then(|p| node.relay_of(&p))
                    && relay.connected
                {
                    let node = Rc::clone(&node);
                    spawn_local(async move { node.reserve(relay.peer).await });
                }
            }
            Event::Listening { .. } => {}
        }
    }
}

/// The relay a circuit address goes through.
fn relay_in(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last = Some(peer),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

async fn reconnect(node: Weak<Node>, url: String) {
    let mut wait = Duration::from_millis(500);
    loop {
        futures_timer::Delay::new(wait).await;
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        if node.relays.borrow().iter().any(|r| r.url == url && r.connected) {
            return;
        }
        match node.connect(&url).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(relay = %url, error = %e, "relay still unreachable"),
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// The Ed25519 signing key of a libp2p identity.
fn signing_key(key: &Keypair) -> Result<shardweb_core::manifest::SigningKey, NodeError> {
    let ed = key
        .clone()
        .try_into_ed25519()
        .map_err(|e| NodeError::Crypto { op: "identity", detail: e.to_string() })?;
    let secret: [u8; 32] = ed.secret().as_ref().try_into().map_err(|_| NodeError::Crypto {
        op: "identity",
        detail: "the identity key is not 32 bytes".into(),
    })?;
    Ok(shardweb_core::manifest::SigningKey::from_bytes(&secret))
}

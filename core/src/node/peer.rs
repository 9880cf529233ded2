//! A shardweb peer on libp2p: the behaviour every node but a relay runs (the native client and
//! the browser node), the [`Driver`] task that owns its swarm, and [`Peer`], the cloneable
//! handle through which the engines and the host talk to it.
//!
//! The driver does no storage of its own: requests from other peers reach the host as
//! [`Inbound`] messages with a reply channel, so the host answers from whatever store it has
//! (IndexedDB in the browser) and the driver stays free of it. A host that serves nothing
//! drops the receiver, and the driver refuses such requests itself.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, Either, select};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as Addr;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, ping, relay};

use super::{Fetched, Network, NetworkError};
use crate::codec::ShardId;
use crate::manifest::ManifestId;
use crate::protocol::{
    ErrorCode, MANIFEST, ManifestCodec, ManifestOutcome, ManifestRequest, ManifestResponse,
    PutOutcome, Refusal, SHARD, ShardCodec, ShardRequest, ShardResponse,
};

/// The Kademlia protocol of shardweb's DHT, kept apart from other networks'.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shardweb/kad/1");
/// The protocol version identify announces.
pub const IDENTIFY_PROTOCOL: &str = "/shardweb/1";

/// How long a peer has to accept a connection.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a DHT lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a relay has to grant a reservation.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests from other peers waiting for the host's answer at once; more are refused as
/// rate-limited until the host catches up.
pub const MAX_PENDING_INBOUND: usize = 64;

/// How a peer takes part in the swarm.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agent version identify announces (`shardweb-browser/0.1.0`).
    pub agent: String,
    /// Whether the peer answers shard and manifest requests (a full node) or only asks.
    pub serve: bool,
    /// How long a request may take before it fails as timed out.
    pub request_timeout: Duration,
    /// Request streams open at once per connection.
    pub max_concurrent_streams: usize,
}

impl Config {
    /// A peer announcing `agent`, serving or not, with the default limits.
    pub fn new(agent: impl Into<String>, serve: bool) -> Self {
        Self {
            agent: agent.into(),
            serve,
            request_timeout: Duration::from_secs(120),
            max_concurrent_streams: 64,
        }
    }
}

/// Every protocol a shardweb peer speaks.
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    shard: request_response::Behaviour<ShardCodec>,
    manifest: request_response::Behaviour<ManifestCodec>,
}

impl Behaviour {
    /// The behaviour for the peer with identity `key`, over the relay client transport's
    /// behaviour (from `SwarmBuilder::with_relay_client`).
    pub fn new(key: &Keypair, relay: relay::client::Behaviour, config: &Config) -> Self {
        let peer_id = key.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad::Config::new(KAD_PROTOCOL),
        );
        kad.set_mode(Some(kad::Mode::Client));
        let support = if config.serve { ProtocolSupport::Full } else { ProtocolSupport::Outbound };
        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams);
        Self {
            relay,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(config.agent.clone()),
            ),
            ping: ping::Behaviour::default(),
            kad,
            shard: request_response::Behaviour::with_codec(
                ShardCodec::default(),
                [(SHARD, support.clone())],
                rr.clone(),
            ),
            manifest: request_response::Behaviour::with_codec(
                ManifestCodec::default(),
                [(MANIFEST, support)],
                rr,
            ),
        }
    }
}

/// A request from another peer, for the host to answer on `reply`. Dropping `reply` answers
/// with an internal-error refusal.
#[derive(Debug)]
pub enum Inbound {
    /// A shard put, get or has.
    Shard { peer: PeerId, request: ShardRequest, reply: Responder<ShardResponse> },
    /// A manifest put or get.
    Manifest { peer: PeerId, request: ManifestRequest, reply: Responder<ManifestResponse> },
}

/// What the driver receives of a host's answer: the answer, and a sender it drops once the
/// answer is written to the peer's stream (or the stream failed).
pub type Answered<T> = (T, oneshot::Sender<()>);

/// Where the host sends its answer to an inbound request.
#[derive(Debug)]
pub struct Responder<T> {
    reply: oneshot::Sender<Answered<T>>,
}

impl<T> Responder<T> {
    /// A responder, and the receiver its answer arrives on (the driver's end; a host's tests
    /// play it).
    pub fn new() -> (Self, oneshot::Receiver<Answered<T>>) {
        let (reply, rx) = oneshot::channel();
        (Self { reply }, rx)
    }

    /// Answers, and resolves once the answer has been written to the peer, or could not be
    /// (the peer left, the request timed out): until then the answer's bytes are still held,
    /// so a host that bounds the memory of its answers keeps them counted until this returns.
    pub async fn send(self, response: T) {
        let (written, done) = oneshot::channel();
        if self.reply.send((response, written)).is_ok() {
            let _ = done.await;
        }
    }

    /// Answers, without waiting for the answer to be written (for a small one).
    pub fn answer(self, response: T) {
        let (written, _) = oneshot::channel();
        let _ = self.reply.send((response, written));
    }
}

/// Something the host may want to show or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection to `peer` opened (its first).
    Connected { peer: PeerId, addr: Multiaddr },
    /// The last connection to `peer` closed.
    Disconnected { peer: PeerId },
    /// Reachable at `addr` (for a browser: a relay circuit after a reservation).
    Listening { addr: Multiaddr },
    /// No longer reachable at `addr`: the relay went away or dropped the reservation.
    ListenClosed { addr: Multiaddr },
}

/// What the host receives from the driver: requests to answer and events. Either may be
/// dropped: requests are then refused, events discarded.
#[derive(Debug)]
pub struct Incoming {
    /// Requests from other peers.
    pub requests: mpsc::Receiver<Inbound>,
    /// Connections, disconnections and listen addresses.
    pub events: mpsc::Receiver<Event>,
}

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

enum Command {
    Dial { peer: PeerId, addrs: Vec<Multiaddr>, another: bool, reply: Reply<()> },
    Listen { addr: Multiaddr, reply: Reply<Multiaddr> },
    Shard { peer: PeerId, request: ShardRequest, reply: Reply<ShardResponse> },
    Manifest { peer: PeerId, request: ManifestRequest, reply: Reply<ManifestResponse> },
    Providers { id: ManifestId, reply: oneshot::Sender<Vec<PeerId>> },
    Provide { id: ManifestId },
    Connected { reply: oneshot::Sender<Vec<(PeerId, Multiaddr)>> },
    Stop,
}

/// The handle to a running peer: cheap to clone; the engines' [`Network`].
#[derive(Debug, Clone)]
pub struct Peer {
    id: PeerId,
    commands: mpsc::Sender<Command>,
}

/// The task that owns the swarm. Run it to completion on the host's executor; it ends when
/// [`Peer::stop`] is called or every [`Peer`] handle is gone.
#[allow(missing_debug_implementations)] // holds the swarm, which is not Debug
pub struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    requests: mpsc::Sender<Inbound>,
    events: mpsc::Sender<Event>,
    pending: Pending,
    answers: FuturesUnordered<BoxFuture<'static, Answer>>,
    /// Connected peers, each with the remote address of its first connection.
    connected: HashMap<PeerId, Multiaddr>,
}

/// An answer the host gave (or failed to give) to an inbound request.
enum Answer {
    Shard(HostAnswer<ShardResponse>),
    Manifest(HostAnswer<ManifestResponse>),
}

/// The host's answer to inbound request `id` from `peer`, to go out on `channel`.
struct HostAnswer<T> {
    peer: PeerId,
    id: InboundRequestId,
    channel: ResponseChannel<T>,
    answered: Result<Answered<T>, oneshot::Canceled>,
}

/// Requests, dials, listens and lookups waiting for their outcome.
#[derive(Default)]
struct Pending {
    dials: HashMap<PeerId, Vec<Reply<()>>>,
    listens: HashMap<ListenerId, Reply<Multiaddr>>,
    shards: HashMap<OutboundRequestId, Reply<ShardResponse>>,
    manifests: HashMap<OutboundRequestId, Reply<ManifestResponse>>,
    lookups: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, Vec<PeerId>)>,
    /// Answers being written to their peers: each sender is dropped once its answer is out
    /// (see [`Responder::send`]).
    writing_shards: HashMap<InboundRequestId, oneshot::Sender<()>>,
    writing_manifests: HashMap<InboundRequestId, oneshot::Sender<()>>,
}

impl Peer {
    /// Wraps a built swarm: returns the handle, the driver to run, and what the host receives.
    pub fn new(swarm: Swarm<Behaviour>) -> (Self, Driver, Incoming) {
        let (commands, commands_rx) = mpsc::channel(64);
        let (requests, requests_rx) = mpsc::channel(MAX_PENDING_INBOUND);
        let (events, events_rx) = mpsc::channel(64);
        let peer = Self { id: *swarm.local_peer_id(), commands };
        let driver = Driver {
            swarm,
            commands: commands_rx,
            requests,
            events,
            pending: Pending::default(),
            answers: FuturesUnordered::new(),
            connected: HashMap::new(),
        };
        (peer, driver, Incoming { requests: requests_rx, events: events_rx })
    }

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Connects to `peer` at `addrs` (or wherever the DHT last saw it, when empty). Known
    /// addresses of peers that speak the DHT are added to its routing table.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { peer, addrs, another: false, reply }).await?;
        within(DIAL_TIMEOUT, rx).await
    }

    /// Opens one more connection to `peer` at `addrs`, beside any there is. Requests to a peer
    /// are spread over its connections, and each connection's secure channel and multiplexer
    /// run in one task, on one core at a time: a second connection lets a large transfer use
    /// two.
    pub async fn dial_another(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { peer, addrs, another: true, reply }).await?;
        within(DIAL_TIMEOUT, rx).await
    }

    /// Listens on `addr`; for `<relay>/p2p-circuit`, asks the relay for a reservation so that
    /// others can reach this peer through it. Returns the address granted.
    pub async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Listen { addr, reply }).await?;
        within(LISTEN_TIMEOUT, rx).await
    }

    /// The peers the DHT names as holders of manifest `id`, connected to (or being dialled).
    pub async fn providers(&self, id: ManifestId) -> Result<Vec<PeerId>, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Providers { id, reply }).await?;
        let found = match select(rx, futures_timer::Delay::new(LOOKUP_TIMEOUT)).await {
            Either::Left((found, _)) => found.unwrap_or_default(),
            Either::Right(_) => Vec::new(),
        };
        // All at once: one holder that does not answer delays the others by nothing.
        let dials = found.iter().map(|&peer| self.dial(peer, Vec::new()));
        let mut connected = Vec::new();
        for (peer, result) in found.iter().zip(futures::future::join_all(dials).await) {
            match result {
                Ok(()) => connected.push(*peer),
                Err(e) => tracing::debug!(%peer, error = %e, "cannot reach a holder"),
            }
        }
        Ok(connected)
    }

    /// Announces in the DHT that this peer holds manifest `id` (and its shards).
    pub async fn provide(&self, id: ManifestId) -> Result<(), NetworkError> {
        self.send(Command::Provide { id }).await
    }

    /// The peers connected now, each with the address of one connection.
    pub async fn connected(&self) -> Result<Vec<(PeerId, Multiaddr)>, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connected { reply }).await?;
        rx.await.map_err(|_| stopped())
    }

    /// Stops the driver: connections close and every request still waiting fails.
    pub async fn stop(&self) {
        let _ = self.send(Command::Stop).await;
    }

    async fn send(&self, command: Command) -> Result<(), NetworkError> {
        self.commands.clone().send(command).await.map_err(|_| stopped())
    }

    async fn shard(
        &self,
        peer: &PeerId,
        request: ShardRequest,
    ) -> Result<ShardResponse, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Shard { peer: *peer, request, reply }).await?;
        rx.await.map_err(|_| stopped())?
    }

    async fn manifest(
        &self,
        peer: &PeerId,
        request: ManifestRequest,
    ) -> Result<ManifestResponse, NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Manifest { peer: *peer, request, reply }).await?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Waits for a driver reply for at most `limit`.
async fn within<T>(
    limit: Duration,
    rx: oneshot::Receiver<Result<T, NetworkError>>,
) -> Result<T, NetworkError> {
    match select(rx, futures_timer::Delay::new(limit)).await {
        Either::Left((reply, _)) => reply.map_err(|_| stopped())?,
        Either::Right(_) => Err(NetworkError::Timeout),
    }
}

fn stopped() -> NetworkError {
    NetworkError::Unreachable { detail: "the node has stopped".into() }
}

fn unexpected(what: &str) -> NetworkError {
    NetworkError::InvalidReply { detail: format!("expected a {what} reply") }
}

impl Network for Peer {
    type Peer = PeerId;

    async fn put_shards(
        &self,
        peer: &PeerId,
        shards: Vec<(ShardId, Bytes)>,
    ) -> Result<Vec<PutOutcome>, NetworkError> {
        match self.shard(peer, ShardRequest::Put(shards)).await? {
            ShardResponse::Put(outcomes) => Ok(outcomes),
            ShardResponse::Refused(r) => Err(NetworkError::Refused(r)),
            _ => Err(unexpected("put")),
        }
    }

    async fn get_shards(
        &self,
        peer: &PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        match self.shard(peer, ShardRequest::Get(ids.clone())).await? {
            ShardResponse::Get(statuses) => Fetched::check_all(&ids, statuses),
            ShardResponse::Refused(r) => Err(NetworkError::Refused(r)),
            _ => Err(unexpected("get")),
        }
    }

    async fn has_shards(
        &self,
        peer: &PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<bool>, NetworkError> {
        match self.shard(peer, ShardRequest::Has(ids)).await? {
            ShardResponse::Has(held) => Ok(held),
            ShardResponse::Refused(r) => Err(NetworkError::Refused(r)),
            _ => Err(unexpected("has")),
        }
    }

    async fn put_manifest(
        &self,
        peer: &PeerId,
        manifest: Bytes,
    ) -> Result<ManifestOutcome, NetworkError> {
        match self.manifest(peer, ManifestRequest::Put(manifest)).await? {
            ManifestResponse::Put(outcome) => Ok(outcome),
            ManifestResponse::Refused(r) => Err(NetworkError::Refused(r)),
            ManifestResponse::Get(_) => Err(unexpected("put")),
        }
    }

    async fn get_manifest(
        &self,
        peer: &PeerId,
        id: ManifestId,
    ) -> Result<Option<Bytes>, NetworkError> {
        match self.manifest(peer, ManifestRequest::Get(id)).await? {
            ManifestResponse::Get(found) => Ok(found),
            ManifestResponse::Refused(r) => Err(NetworkError::Refused(r)),
            ManifestResponse::Put(_) => Err(unexpected("get")),
        }
    }
}

impl Driver {
    /// Runs the swarm until stopped.
    pub async fn run(mut self) {
        loop {
            futures::select! {
                command = self.commands.next() => match command {
                    Some(Command::Stop) | None => break,
                    Some(command) => self.on_command(command),
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                answer = self.answers.select_next_some() => self.answer(answer),
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "peer stopped");
    }

    fn on_command(&mut self, command: Command) {
        let swarm = &mut self.swarm;
        let pending = &mut self.pending;
        match command {
            Command::Dial { peer, addrs, another, reply } => {
                if swarm.is_connected(&peer) && !another {
                    let _ = reply.send(Ok(()));
                    return;
                }
                for addr in &addrs {
                    swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                }
                let mut opts = DialOpts::peer_id(peer).addresses(addrs);
                if another {
                    opts = opts.condition(PeerCondition::Always);
                }
                let opts = opts.build();
                match swarm.dial(opts) {
                    Ok(()) => pending.dials.entry(peer).or_default().push(reply),
                    // A dial already under way (a holder found in the DHT): wait for it.
                    Err(_) if pending.dials.contains_key(&peer) => {
                        pending.dials.entry(peer).or_default().push(reply);
                    }
                    Err(e) => {
                        let _ =
                            reply.send(Err(NetworkError::Unreachable { detail: e.to_string() }));
                    }
                }
            }
            Command::Listen { addr, reply } => match swarm.listen_on(addr) {
                Ok(id) => {
                    pending.listens.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NetworkError::Unreachable { detail: e.to_string() }));
                }
            },
            Command::Shard { peer, request, reply } => {
                let id = swarm.behaviour_mut().shard.send_request(&peer, Ok(request));
                pending.shards.insert(id, reply);
            }
            Command::Manifest { peer, request, reply } => {
                let id = swarm.behaviour_mut().manifest.send_request(&peer, Ok(request));
                pending.manifests.insert(id, reply);
            }
            Command::Providers { id, reply } => {
                let query = swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&id.0));
                pending.lookups.insert(query, (reply, Vec::new()));
            }
            Command::Provide { id } => {
                if let Err(e) =
                    swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&id.0))
                {
                    tracing::warn!(manifest = %id, error = %e, "cannot announce a manifest");
                }
            }
            Command::Connected { reply } => {
                let connected = self.connected.iter().map(|(p, a)| (*p, a.clone())).collect();
                let _ = reply.send(connected);
            }
            Command::Stop => {}
        }
    }

    fn event(&mut self, event: Event) {
        // Events are advisory: when the host does not keep up, they are dropped.
        let _ = self.events.try_send(event);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use request_response::{Event as Rr, Message};
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                for reply in self.pending.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    let addr = endpoint.get_remote_address().clone();
                    self.connected.insert(peer_id, addr.clone());
                    self.event(Event::Connected { peer: peer_id, addr });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.remove(&peer_id);
                self.event(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                for reply in self.pending.dials.remove(&peer).unwrap_or_default() {
                    let detail = error.to_string();
                    let _ = reply.send(Err(NetworkError::Unreachable { detail }));
                }
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                if address.iter().any(|p| p == Addr::P2pCircuit) {
                    // Others find this peer through the DHT at the circuit address.
                    self.swarm.add_external_address(address.clone());
                }
                if let Some(reply) = self.pending.listens.remove(&listener_id) {
                    let _ = reply.send(Ok(address.clone()));
                }
                self.event(Event::Listening { addr: address });
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                if let Some(reply) = self.pending.listens.remove(&listener_id) {
                    let detail = match reason {
                        Ok(()) => "the listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(NetworkError::Unreachable { detail }));
                }
                for addr in addresses {
                    self.swarm.remove_external_address(&addr);
                    self.event(Event::ListenClosed { addr });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Shard(event)) => match event {
                Rr::Message { message: Message::Response { request_id, response }, .. } => {
                    if let Some(reply) = self.pending.shards.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Rr::Message {
                    peer,
                    message: Message::Request { request_id, request, channel },
                    ..
                } => {
                    self.on_shard_request(peer, request_id, request, channel);
                }
                Rr::OutboundFailure { request_id, error, .. } => {
                    if let Some(reply) = self.pending.shards.remove(&request_id) {
                        let _ = reply.send(Err(failure(&error)));
                    }
                }
                Rr::ResponseSent { request_id, .. } | Rr::InboundFailure { request_id, .. } => {
                    self.pending.writing_shards.remove(&request_id);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Manifest(event)) => match event {
                Rr::Message { message: Message::Response { request_id, response }, .. } => {
                    if let Some(reply) = self.pending.manifests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Rr::Message {
                    peer,
                    message: Message::Request { request_id, request, channel },
                    ..
                } => {
                    self.on_manifest_request(peer, request_id, request, channel);
                }
                Rr::OutboundFailure { request_id, error, .. } => {
                    if let Some(reply) = self.pending.manifests.remove(&request_id) {
                        let _ = reply.send(Err(failure(&error)));
                    }
                }
                Rr::ResponseSent { request_id, .. } | Rr::InboundFailure { request_id, .. } => {
                    self.pending.writing_manifests.remove(&request_id);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            })) => self.on_providers(id, result, step.last),
            _ => {}
        }
    }

    fn on_providers(&mut self, id: kad::QueryId, result: kad::GetProvidersResult, last: bool) {
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
            && let Some((_, found)) = self.pending.lookups.get_mut(&id)
        {
            for peer in providers {
                if peer == *self.swarm.local_peer_id() || found.contains(&peer) {
                    continue;
                }
                // Dial now: the provider's addresses live only in the running query.
                if !self.swarm.is_connected(&peer)
                    && self.swarm.dial(DialOpts::peer_id(peer).build()).is_ok()
                {
                    self.pending.dials.entry(peer).or_default();
                }
                found.push(peer);
            }
        }
        if last && let Some((reply, found)) = self.pending.lookups.remove(&id) {
            let _ = reply.send(found);
        }
    }

    fn on_shard_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: crate::protocol::Incoming<ShardRequest>,
        channel: ResponseChannel<ShardResponse>,
    ) {
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                let refused = ShardResponse::Refused(Refusal::for_error(&e));
                let _ = self.swarm.behaviour_mut().shard.send_response(channel, refused);
                return;
            }
        };
        let (reply, rx) = Responder::new();
        match self.requests.try_send(Inbound::Shard { peer, request, reply }) {
            Ok(()) => {
                let answer = rx
                    .map(move |answered| Answer::Shard(HostAnswer { peer, id, channel, answered }));
                self.answers.push(answer.boxed());
            }
            Err(e) => {
                let refused = ShardResponse::Refused(busy(e.is_full()));
                let _ = self.swarm.behaviour_mut().shard.send_response(channel, refused);
            }
        }
    }

    fn on_manifest_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: crate::protocol::Incoming<ManifestRequest>,
        channel: ResponseChannel<ManifestResponse>,
    ) {
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                let refused = ManifestResponse::Refused(Refusal::for_error(&e));
                let _ = self.swarm.behaviour_mut().manifest.send_response(channel, refused);
                return;
            }
        };
        let (reply, rx) = Responder::new();
        match self.requests.try_send(Inbound::Manifest { peer, request, reply }) {
            Ok(()) => {
                let answer = rx.map(move |answered| {
                    Answer::Manifest(HostAnswer { peer, id, channel, answered })
                });
                self.answers.push(answer.boxed());
            }
            Err(e) => {
                let refused = ManifestResponse::Refused(busy(e.is_full()));
                let _ = self.swarm.behaviour_mut().manifest.send_response(channel, refused);
            }
        }
    }

    fn answer(&mut self, answer: Answer) {
        let (behaviour, pending) = (self.swarm.behaviour_mut(), &mut self.pending);
        match answer {
            Answer::Shard(answer) => {
                hand_over(&mut behaviour.shard, &mut pending.writing_shards, answer, || {
                    ShardResponse::Refused(internal())
                })
            }
            Answer::Manifest(answer) => {
                hand_over(&mut behaviour.manifest, &mut pending.writing_manifests, answer, || {
                    ManifestResponse::Refused(internal())
                })
            }
        }
    }
}

/// Hands the host's answer to the swarm (`refused()` when the host gave none), and keeps in
/// `writing` the sender that tells the host when it is written, until the swarm says so. A
/// request that already failed (its channel closed, or its connection's failure already
/// reported) drops the sender at once: no event would come for it.
fn hand_over<C>(
    rr: &mut request_response::Behaviour<C>,
    writing: &mut HashMap<InboundRequestId, oneshot::Sender<()>>,
    answer: HostAnswer<C::Response>,
    refused: impl FnOnce() -> C::Response,
) where
    C: request_response::Codec + Clone + Send + 'static,
{
    let HostAnswer { peer, id, channel, answered } = answer;
    let (response, written) = match answered {
        Ok((response, written)) => (response, Some(written)),
        Err(_) => (refused(), None),
    };
    if rr.send_response(channel, response).is_ok()
        && rr.is_pending_inbound(&peer, &id)
        && let Some(written) = written.filter(|w| !w.is_canceled())
    {
        writing.insert(id, written);
    }
}

fn busy(full: bool) -> Refusal {
    if full {
        Refusal { code: ErrorCode::RateLimited, message: "too many requests at once".into() }
    } else {
        Refusal { code: ErrorCode::Unauthorized, message: "this peer serves no data".into() }
    }
}

fn internal() -> Refusal {
    Refusal { code: ErrorCode::Internal, message: "the request could not be answered".into() }
}

fn failure(error: &request_response::OutboundFailure) -> NetworkError {
    match error {
        request_response::OutboundFailure::Timeout => NetworkError::Timeout,
        other => NetworkError::Unreachable { detail: other.to_string() },
    }
}

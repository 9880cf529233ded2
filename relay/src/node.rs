//! The relay node: a libp2p swarm that keeps shards and manifests in the disk store and serves
//! them, relays circuits for peers behind NAT, and takes part in the DHT.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as Addr;
use libp2p::request_response::{self, InboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport, autonat, gossipsub, identify, kad, noise, ping, relay, tcp,
};
use shardweb_core::ManifestId;
use shardweb_core::node::mux;
use shardweb_core::node::peer::{IDENTIFY_PROTOCOL, KAD_PROTOCOL};
use shardweb_core::protocol::{
    ErrorCode, Incoming, MANIFEST, MAX_FRAME_BYTES, ManifestCodec, ManifestOutcome,
    ManifestRequest, ManifestResponse, PutOutcome, Refusal, SHARD, ShardCodec, ShardRequest,
    ShardResponse, ShardStatus,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{Metrics, Outcome, Protocol};
use crate::store::{self, DiskStore, Limits, Stored};

/// The gossipsub topic of locate broadcasts.
pub const LOCATE_TOPIC: &str = "shardweb/locate/1";
/// The software version, as identify and `/api/info` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the HTTP server reads of the running node.
#[derive(Debug)]
pub struct Shared {
    /// This node's identity key: it signs the receipts of puts over HTTP.
    pub key: Keypair,
    /// This node's peer id.
    pub peer_id: PeerId,
    /// Addresses peers can dial, each ending in `/p2p/<peer id>`.
    pub addrs: RwLock<Vec<Multiaddr>>,
    /// The store.
    pub store: Arc<DiskStore>,
    /// Counters.
    pub metrics: Metrics,
    /// The configuration in force.
    pub config: Config,
    /// What get replies may hold in memory.
    pub replies: ReplyBudget,
}

/// The bytes of shards that replies to gets hold in memory until they are sent, over libp2p and
/// HTTP together ([`Config::max_reply_mib`]): each reply holds its shards' length of it, and a
/// shard that does not fit is answered `deferred`. Without it, peers asking on many
/// connections and reading slowly (or not at all) could hold any amount of memory.
#[derive(Debug, Clone)]
pub struct ReplyBudget(Arc<Semaphore>);

impl ReplyBudget {
    /// A budget of `mib` MiB, and never less than one frame.
    pub fn new(mib: usize) -> Self {
        let bytes = mib.max(MAX_FRAME_BYTES >> 20).saturating_mul(1 << 20);
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }

    /// `bytes` of the budget, if it has them now.
    pub fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        Arc::clone(&self.0).try_acquire_many_owned(bytes).ok()
    }

    /// `bytes` of the budget, waiting at most `within` for them.
    pub async fn take(&self, bytes: usize, within: Duration) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        let taking = Arc::clone(&self.0).acquire_many_owned(bytes);
        tokio::time::timeout(within, taking).await.ok()?.ok()
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Every protocol a relay speaks.
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    relay: relay::Behaviour,
    autonat: autonat::v2::server::Behaviour,
    gossipsub: gossipsub::Behaviour,
    shard: request_response::Behaviour<ShardCodec>,
    manifest: request_response::Behaviour<ManifestCodec>,
}

impl Behaviour {
    fn new(key: &Keypair, config: &Config) -> anyhow::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("shardweb/{VERSION}")),
        );
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad::Config::new(KAD_PROTOCOL),
        );
        kad.set_mode(Some(kad::Mode::Server));
        let relay = relay::Behaviour::new(
            peer_id,
            relay::Config {
                max_reservations: config.max_reservations,
                max_reservations_per_peer: config.max_reservations_per_peer,
                max_circuits: config.max_circuits,
                max_circuits_per_peer: config.max_circuits_per_peer,
                max_circuit_bytes: config.max_circuit_bytes,
                max_circuit_duration: Duration::from_secs(config.max_circuit_secs),
                ..relay::Config::default()
            },
        );
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub::Config::default(),
        )
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        gossipsub.subscribe(&gossipsub::IdentTopic::new(LOCATE_TOPIC))?;
        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout())
            .with_max_concurrent_streams(config.max_concurrent_streams);
        Ok(Self {
            identify,
            ping: ping::Behaviour::default(),
            kad,
            relay,
            autonat: autonat::v2::server::Behaviour::default(),
            gossipsub,
            shard: request_response::Behaviour::with_codec(
                ShardCodec::default(),
                [(SHARD, ProtocolSupport::Full)],
                rr.clone(),
            ),
            manifest: request_response::Behaviour::with_codec(
                ManifestCodec::default(),
                [(MANIFEST, ProtocolSupport::Full)],
                rr,
            ),
        })
    }
}

/// Builds the relay's swarm on TCP, QUIC, WebRTC-direct and WebSocket.
pub async fn swarm(
    key: Keypair,
    cert: libp2p_webrtc::tokio::Certificate,
    config: &Config,
) -> anyhow::Result<Swarm<Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            (crate::tls::Config::new, noise::Config::new),
            mux::config,
        )?
        .with_quic()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), cert)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        })?
        .with_dns()?
        .with_websocket(noise::Config::new, mux::config)
        .await?
        .with_behaviour(|key| Behaviour::new(key, config).map_err(Into::into))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build())
}

/// A store operation finished off the event loop, with the channel to answer on.
enum Reply {
    /// A shard reply, and the part of the reply budget it holds until sent.
    Shard(
        ResponseChannel<ShardResponse>,
        ShardResponse,
        InboundRequestId,
        Option<OwnedSemaphorePermit>,
    ),
    Manifest(ResponseChannel<ManifestResponse>, ManifestResponse, Option<ManifestId>),
}

/// Runs the node until `shutdown` resolves.
pub async fn run(
    mut swarm: Swarm<Behaviour>,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = &shared.config;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).with_context(|| format!("cannot listen on {addr}"))?;
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.bootstrap {
        if let Some(Addr::P2p(peer)) = addr.iter().last() {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap relay");
        }
    }
    let mut pending: FuturesUnordered<JoinHandle<Reply>> = FuturesUnordered::new();
    let mut sending = Sending::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = pending.next(), if !pending.is_empty() => match done {
                Ok(reply) => answer(&mut swarm, reply, &mut sending, config.request_timeout()),
                Err(e) => tracing::error!(error = %e, "store task failed"),
            },
            event = swarm.select_next_some() => {
                if let Some(task) = on_event(&mut swarm, &shared, event, &mut sending) {
                    pending.push(task);
                }
            }
        }
    }
    tracing::info!("relay stopping");
    Ok(())
}

/// The reply budget held by shard replies libp2p is sending, by request, with when each was
/// handed over: released when libp2p says the reply was sent or failed.
#[derive(Default)]
struct Sending(HashMap<InboundRequestId, (Instant, OwnedSemaphorePermit)>);

impl Sending {
    fn hold(&mut self, id: InboundRequestId, permit: OwnedSemaphorePermit, timeout: Duration) {
        // A reply that libp2p neither sent nor failed within twice its timeout gives its part
        // back all the same: a missed event costs no budget for good.
        self.0.retain(|_, (since, _)| since.elapsed() < 2 * timeout);
        self.0.insert(id, (Instant::now(), permit));
    }

    fn release(&mut self, id: InboundRequestId) {
        self.0.remove(&id);
    }
}

fn answer(swarm: &mut Swarm<Behaviour>, reply: Reply, sending: &mut Sending, timeout: Duration) {
    let behaviour = swarm.behaviour_mut();
    match reply {
        Reply::Shard(channel, response, id, held) => {
            if behaviour.shard.send_response(channel, response).is_ok()
                && let Some(permit) = held
            {
                sending.hold(id, permit, timeout);
            }
        }
        Reply::Manifest(channel, response, provide) => {
            let _ = behaviour.manifest.send_response(channel, response);
            if let Some(id) = provide
                && let Err(e) = behaviour.kad.start_providing(kad::RecordKey::new(&id.0))
            {
                tracing::warn!(manifest = %id, error = %e, "cannot announce manifest");
            }
        }
    }
}

fn on_event(
    swarm: &mut Swarm<Behaviour>,
    shared: &Arc<Shared>,
    event: SwarmEvent<BehaviourEvent>,
    sending: &mut Sending,
) -> Option<JoinHandle<Reply>> {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            tracing::info!(%address, "listening");
            swarm.add_external_address(address.clone());
            let full = address.with_p2p(shared.peer_id).unwrap_or_else(|a| a);
            if let Ok(mut addrs) = shared.addrs.write() {
                addrs.push(full);
            }
        }
        SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
            let peers = swarm.connected_peers().count() as u64;
            shared.metrics.peers.store(peers, std::sync::atomic::Ordering::Relaxed);
            // Established only: a dial still pending when this event fires may fail later
            // without another event, and would be counted until the next one.
            let connections =
                u64::from(swarm.network_info().connection_counters().num_established());
            shared.metrics.connections.store(connections, std::sync::atomic::Ordering::Relaxed);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) if info.protocols.contains(&KAD_PROTOCOL) => {
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Shard(request_response::Event::Message {
            peer,
            message: request_response::Message::Request { request, channel, request_id },
            ..
        })) => {
            let shared = Arc::clone(shared);
            return Some(tokio::task::spawn_blocking(move || {
                let (response, held) = serve_shards(&shared, &peer, request, Protocol::Shard);
                Reply::Shard(channel, response, request_id, held)
            }));
        }
        SwarmEvent::Behaviour(BehaviourEvent::Shard(request_response::Event::ResponseSent {
            request_id,
            ..
        })) => sending.release(request_id),
        SwarmEvent::Behaviour(BehaviourEvent::Manifest(request_response::Event::Message {
            peer,
            message: request_response::Message::Request { request, channel, .. },
            ..
        })) => {
            let shared = Arc::clone(shared);
            return Some(tokio::task::spawn_blocking(move || {
                let (response, provide) = serve_manifest(&shared, &peer, request);
                Reply::Manifest(channel, response, provide)
            }));
        }
        SwarmEvent::Behaviour(BehaviourEvent::Shard(request_response::Event::InboundFailure {
            peer,
            error,
            request_id,
            ..
        })) => {
            sending.release(request_id);
            tracing::debug!(%peer, %error, "shard request failed");
            shared.metrics.request(Protocol::Shard, Outcome::Error);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Manifest(
            request_response::Event::InboundFailure { peer, error, .. },
        )) => {
            tracing::debug!(%peer, %error, "manifest request failed");
            shared.metrics.request(Protocol::Manifest, Outcome::Error);
        }
        _ => {}
    }
    None
}

/// Answers a shard request from the store, counted under `protocol` (libp2p's or HTTP's), with
/// the part of the reply budget a get's shards hold: the caller keeps it until the reply is
/// sent. Runs on a blocking thread.
pub fn serve_shards(
    shared: &Shared,
    peer: &PeerId,
    request: Incoming<ShardRequest>,
    protocol: Protocol,
) -> (ShardResponse, Option<OwnedSemaphorePermit>) {
    let (store, metrics) = (&shared.store, &shared.metrics);
    let owner = peer.to_bytes();
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "malformed shard request");
            metrics.request(protocol, Outcome::Refused);
            return (ShardResponse::Refused(Refusal::for_error(&e)), None);
        }
    };
    let mut held: Option<OwnedSemaphorePermit> = None;
    let response = match request {
        ShardRequest::Put(shards) => {
            let batch: Vec<(shardweb_core::ShardId, &[u8])> =
                shards.iter().map(|(id, bytes)| (*id, &bytes[..])).collect();
            let received = batch.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
            metrics.bytes_in.fetch_add(received, std::sync::atomic::Ordering::Relaxed);
            let outcomes = store.put_shards(&owner, &batch).into_iter().zip(&batch).map(
                |(result, (id, _))| match result {
                    Ok(Stored::New) => PutOutcome::Stored,
                    Ok(Stored::AlreadyHeld) => PutOutcome::AlreadyHeld,
                    Err(store::Error::Mismatch { .. }) => PutOutcome::Mismatch,
                    Err(store::Error::PeerQuota { .. } | store::Error::StoreFull { .. }) => {
                        PutOutcome::NoSpace
                    }
                    Err(e) => {
                        tracing::error!(shard = %id, error = %e, "cannot store shard");
                        PutOutcome::Failed
                    }
                },
            );
            ShardResponse::Put(outcomes.collect())
        }
        ShardRequest::Get(ids) => {
            let mut budget = MAX_FRAME_BYTES.saturating_sub(3 + 5 * ids.len());
            // Once one shard has not fit (in the frame, or in the relay's reply budget), the
            // rest are not even read: a short request naming many large shards costs at most
            // one frame's worth of reading. A shard's room is taken before it is read, from
            // its recorded length, so a relay out of budget reads nothing.
            let mut full = false;
            let mut serve = |id: &shardweb_core::ShardId| {
                if full {
                    return ShardStatus::Deferred;
                }
                let len = match store.shard_len(id) {
                    Ok(Some(len)) => usize::try_from(len).unwrap_or(usize::MAX),
                    Ok(None) => return ShardStatus::Missing,
                    Err(e) => {
                        tracing::error!(shard = %id, error = %e, "cannot read shard");
                        return ShardStatus::Missing;
                    }
                };
                let room = if len <= budget { shared.replies.try_take(len) } else { None };
                let Some(room) = room else {
                    full = true;
                    return ShardStatus::Deferred;
                };
                match store.get_shard(id) {
                    Ok(Some(bytes)) => {
                        budget = budget.saturating_sub(bytes.len());
                        tracing::debug!(%peer, shard = %id, "serving shard");
                        metrics
                            .bytes_out
                            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        match held.as_mut() {
                            Some(held) => held.merge(room),
                            None => held = Some(room),
                        }
                        ShardStatus::Found(bytes)
                    }
                    Ok(None) | Err(store::Error::Corrupt { .. }) => ShardStatus::Missing,
                    Err(e) => {
                        tracing::error!(shard = %id, error = %e, "cannot read shard");
                        ShardStatus::Missing
                    }
                }
            };
            let statuses = ids.iter().map(&mut serve).collect();
            ShardResponse::Get(statuses)
        }
        ShardRequest::Has(ids) => {
            ShardResponse::Has(ids.iter().map(|id| store.has_shard(id).unwrap_or(false)).collect())
        }
    };
    metrics.request(protocol, Outcome::Ok);
    (response, held)
}

/// Answers a manifest request from the store; returns the id to announce when one was stored.
pub fn serve_manifest(
    shared: &Shared,
    peer: &PeerId,
    request: Incoming<ManifestRequest>,
) -> (ManifestResponse, Option<ManifestId>) {
    let (store, metrics) = (&shared.store, &shared.metrics);
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            metrics.request(Protocol::Manifest, Outcome::Refused);
            return (ManifestResponse::Refused(Refusal::for_error(&e)), None);
        }
    };
    metrics.request(Protocol::Manifest, Outcome::Ok);
    match request {
        ManifestRequest::Put(bytes) => match store.put_manifest(&peer.to_bytes(), &bytes) {
            Ok((id, Stored::New)) => (ManifestResponse::Put(ManifestOutcome::Stored), Some(id)),
            Ok((id, Stored::AlreadyHeld)) => {
                (ManifestResponse::Put(ManifestOutcome::AlreadyHeld), Some(id))
            }
            Err(store::Error::InvalidManifest(e)) => {
                tracing::debug!(%peer, error = %e, "refused an invalid manifest");
                (ManifestResponse::Put(ManifestOutcome::Invalid), None)
            }
            Err(store::Error::PeerQuota { .. } | store::Error::StoreFull { .. }) => {
                (ManifestResponse::Put(ManifestOutcome::NoSpace), None)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store manifest");
                let refusal =
                    Refusal { code: ErrorCode::Internal, message: "storage failed".into() };
                (ManifestResponse::Refused(refusal), None)
            }
        },
        ManifestRequest::Get(id) => match store.get_manifest(&id) {
            Ok(found) => (ManifestResponse::Get(found), None),
            Err(e) => {
                tracing::error!(manifest = %id, error = %e, "cannot read manifest");
                (ManifestResponse::Get(None), None)
            }
        },
    }
}

/// Opens the data directory, the store and the identity, ready for [`swarm`] and [`run`].
pub fn open(
    config: Config,
) -> anyhow::Result<(Keypair, libp2p_webrtc::tokio::Certificate, Arc<Shared>)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let key = crate::identity::keypair(&config.data_dir)?;
    let cert = crate::identity::certificate(&config.data_dir)?;
    let limits =
        Limits { max_bytes: config.max_storage, max_bytes_per_peer: config.max_storage_per_peer };
    let store = DiskStore::open(&config.data_dir.join("store"), limits)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let shared = Arc::new(Shared {
        key: key.clone(),
        peer_id: key.public().to_peer_id(),
        addrs: RwLock::new(Vec::new()),
        store: Arc::new(store),
        metrics: Metrics::default(),
        replies: ReplyBudget::new(config.max_reply_mib),
        config,
    });
    Ok((key, cert, shared))
}

#[cfg(test)]
mod tests {
    use soketto::base::{Codec, Header, OpCode};

    /// A browser masks every WebSocket frame it sends, and `/ws` connections unmask them with
    /// the vendored `soketto`, which XORs in 64-byte blocks: it gives the bytes RFC 6455
    /// defines, on the RFC's own example and at every length around the block size.
    #[test]
    fn the_websocket_transport_uses_the_vendored_soketto() {
        let lock = include_str!("../../Cargo.lock");
        let entries: Vec<&str> =
            lock.split("[[package]]").filter(|p| p.contains("name = \"soketto\"")).collect();
        assert_eq!(entries.len(), 1, "one soketto in the build: {entries:?}");
        assert!(!entries[0].contains("source ="), "soketto comes from vendor/: {}", entries[0]);
        let websocket =
            lock.split("[[package]]").find(|p| p.contains("name = \"libp2p-websocket\""));
        assert!(websocket.is_some_and(|p| p.contains("\"soketto\"")), "libp2p-websocket uses it");
    }

    #[test]
    fn browser_frames_unmask_as_rfc_6455_defines() {
        let mut header = Header::new(OpCode::Text);
        header.set_masked(true).set_mask(0x37fa_213d);
        let mut hello = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        Codec::apply_mask(&header, &mut hello);
        assert_eq!(&hello, b"Hello", "RFC 6455 section 5.7");

        let mut header = Header::new(OpCode::Binary);
        header.set_masked(true).set_mask(0xa1b2_c3d4);
        let key = header.mask().to_be_bytes();
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut unmasked = data.clone();
            Codec::apply_mask(&header, &mut unmasked);
            let expected: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(unmasked, expected, "{len} bytes");
        }

        let mut plain = Header::new(OpCode::Binary);
        plain.set_mask(0xa1b2_c3d4);
        let mut data = [1u8; 100];
        Codec::apply_mask(&plain, &mut data);
        assert_eq!(data, [1u8; 100], "a frame without the mask bit is left as it is");
    }
}

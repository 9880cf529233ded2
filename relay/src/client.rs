//! The native client: a small libp2p node that dials relays and drives `core`'s upload and
//! download engines over them. Used by `shardweb put`, `get` and `status`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as Addr;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, noise, ping, tcp};
use shardweb_core::node::{Network, NetworkError};
use shardweb_core::protocol::{
    ManifestOutcome, ManifestRequest, ManifestResponse, PutOutcome, ShardRequest, ShardResponse,
    ShardStatus,
};
use shardweb_core::{ManifestId, ShardId};
use tokio::sync::{mpsc, oneshot};

use crate::http::Info;
use crate::node::{KAD_PROTOCOL, VERSION, yamux_config};
use crate::protocol::{MANIFEST, ManifestCodec, SHARD, ShardCodec};

/// How long a relay has to accept a connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a peer has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a DHT lookup for a manifest's holders may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    shard: request_response::Behaviour<ShardCodec>,
    manifest: request_response::Behaviour<ManifestCodec>,
}

type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

enum Command {
    Dial { peer: PeerId, addrs: Vec<Multiaddr>, reply: Reply<()> },
    Shard { peer: PeerId, request: ShardRequest, reply: Reply<ShardResponse> },
    Manifest { peer: PeerId, request: ManifestRequest, reply: Reply<ManifestResponse> },
    Providers { id: ManifestId, reply: oneshot::Sender<Vec<PeerId>> },
}

/// A running client node. Dropping it stops the node.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
    key: Keypair,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts a client node with a fresh identity.
    pub fn start() -> anyhow::Result<Self> {
        let key = Keypair::generate_ed25519();
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux_config)?
            .with_quic()
            .with_behaviour(|key| {
                let peer_id = key.public().to_peer_id();
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad::Config::new(KAD_PROTOCOL),
                );
                kad.set_mode(Some(kad::Mode::Client));
                let rr = request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(64);
                Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new("/shardweb/1".into(), key.public())
                            .with_agent_version(format!("shardweb-client/{VERSION}")),
                    ),
                    ping: ping::Behaviour::default(),
                    kad,
                    shard: request_response::Behaviour::with_codec(
                        ShardCodec::default(),
                        [(SHARD, ProtocolSupport::Outbound)],
                        rr.clone(),
                    ),
                    manifest: request_response::Behaviour::with_codec(
                        ManifestCodec::default(),
                        [(MANIFEST, ProtocolSupport::Outbound)],
                        rr,
                    ),
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (commands, rx) = mpsc::channel(64);
        let task = tokio::spawn(drive(swarm, rx));
        Ok(Self { commands, task, key })
    }

    /// The Ed25519 key that signs this client's manifests (its libp2p identity).
    pub fn signing_key(&self) -> anyhow::Result<ed25519_dalek::SigningKey> {
        let ed = self.key.clone().try_into_ed25519()?;
        let secret: [u8; 32] = ed.secret().as_ref().try_into()?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// Reads each relay's `/api/info` and dials it. Fails if none can be reached; a relay
    /// that cannot be reached while others can is reported and skipped.
    pub async fn connect(&self, relays: &[String]) -> anyhow::Result<Vec<PeerId>> {
        let mut peers = Vec::new();
        let mut failures = Vec::new();
        for url in relays {
            match self.connect_one(url).await {
                Ok(peer) if !peers.contains(&peer) => peers.push(peer),
                Ok(_) => {}
                Err(e) => failures.push((url, e)),
            }
        }
        if peers.is_empty() {
            return Err(failures.pop().map_or_else(|| anyhow!("no relay given"), |(_, e)| e));
        }
        for (url, e) in failures {
            tracing::warn!(relay = %url, error = %e, "skipping relay");
        }
        Ok(peers)
    }

    async fn connect_one(&self, url: &str) -> anyhow::Result<PeerId> {
        let info = relay_info(url).await?;
        let peer: PeerId =
            info.peer_id.parse().with_context(|| format!("{url} sent a bad peer id"))?;
        let addrs: Vec<Multiaddr> = info
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(native_dialable)
            .collect();
        if addrs.is_empty() {
            bail!("relay {url} lists no TCP or QUIC address");
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { peer, addrs, reply }).await?;
        tokio::time::timeout(DIAL_TIMEOUT, rx)
            .await
            .map_err(|_| anyhow!("relay {url} did not accept a connection in time"))?
            .map_err(|_| anyhow!("client stopped"))?
            .map_err(|e| anyhow!("cannot connect to relay {url}: {e}"))?;
        Ok(peer)
    }

    /// Asks the DHT for the holders of a manifest and connects to them.
    pub async fn providers(&self, id: ManifestId) -> anyhow::Result<Vec<PeerId>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Providers { id, reply }).await?;
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, rx).await.ok().and_then(Result::ok);
        let mut connected = Vec::new();
        for peer in found.unwrap_or_default() {
            let (reply, rx) = oneshot::channel();
            self.send(Command::Dial { peer, addrs: Vec::new(), reply }).await?;
            match tokio::time::timeout(DIAL_TIMEOUT, rx).await {
                Ok(Ok(Ok(()))) => connected.push(peer),
                _ => tracing::debug!(%peer, "cannot reach a holder found in the DHT"),
            }
        }
        Ok(connected)
    }

    async fn send(&self, command: Command) -> anyhow::Result<()> {
        self.commands.send(command).await.map_err(|_| anyhow!("client stopped"))
    }

    async fn shard(
        &self,
        peer: &PeerId,
        request: ShardRequest,
    ) -> Result<ShardResponse, NetworkError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Shard { peer: *peer, request, reply };
        self.commands.send(command).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn manifest(
        &self,
        peer: &PeerId,
        request: ManifestRequest,
    ) -> Result<ManifestResponse, NetworkError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Manifest { peer: *peer, request, reply };
        self.commands.send(command).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> NetworkError {
    NetworkError::Unreachable { detail: "client stopped".into() }
}

fn unexpected(what: &str) -> NetworkError {
    NetworkError::InvalidReply { detail: format!("expected a {what} reply") }
}

impl Network for Client {
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
    ) -> Result<Vec<ShardStatus>, NetworkError> {
        match self.shard(peer, ShardRequest::Get(ids)).await? {
            ShardResponse::Get(statuses) => Ok(statuses),
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

/// Addresses a native client can dial: TCP (not WebSocket) and QUIC.
fn native_dialable(addr: &Multiaddr) -> bool {
    let mut tcp = false;
    for p in addr.iter() {
        match p {
            Addr::Tcp(_) | Addr::QuicV1 => tcp = true,
            Addr::Ws(_) | Addr::Wss(_) | Addr::WebRTCDirect | Addr::Certhash(_) => return false,
            _ => {}
        }
    }
    tcp
}

/// The state of the swarm task: requests and dials waiting for their answer.
#[derive(Default)]
struct Pending {
    dials: HashMap<PeerId, Vec<Reply<()>>>,
    shards: HashMap<OutboundRequestId, Reply<ShardResponse>>,
    manifests: HashMap<OutboundRequestId, Reply<ManifestResponse>>,
    lookups: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, Vec<PeerId>)>,
}

async fn drive(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>) {
    let mut pending = Pending::default();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => on_command(&mut swarm, &mut pending, command),
                None => break,
            },
            event = swarm.select_next_some() => on_event(&mut swarm, &mut pending, event),
        }
    }
}

fn on_command(swarm: &mut Swarm<Behaviour>, pending: &mut Pending, command: Command) {
    match command {
        Command::Dial { peer, addrs, reply } => {
            if swarm.is_connected(&peer) {
                let _ = reply.send(Ok(()));
                return;
            }
            if addrs.is_empty() {
                // A dial already under way (a provider found in the DHT): wait for it.
                pending.dials.entry(peer).or_default().push(reply);
                return;
            }
            for addr in &addrs {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            match swarm.dial(opts) {
                Ok(()) => pending.dials.entry(peer).or_default().push(reply),
                Err(e) => {
                    let _ = reply.send(Err(NetworkError::Unreachable { detail: e.to_string() }));
                }
            }
        }
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
    }
}

fn failure(error: &request_response::OutboundFailure) -> NetworkError {
    match error {
        request_response::OutboundFailure::Timeout => NetworkError::Timeout,
        other => NetworkError::Unreachable { detail: other.to_string() },
    }
}

fn on_event(
    swarm: &mut Swarm<Behaviour>,
    pending: &mut Pending,
    event: SwarmEvent<BehaviourEvent>,
) {
    use request_response::{Event, Message};
    match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            for reply in pending.dials.remove(&peer_id).unwrap_or_default() {
                let _ = reply.send(Ok(()));
            }
        }
        SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
            for reply in pending.dials.remove(&peer).unwrap_or_default() {
                let detail = error.to_string();
                let _ = reply.send(Err(NetworkError::Unreachable { detail }));
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Shard(event)) => match event {
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(reply) = pending.shards.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = pending.shards.remove(&request_id) {
                    let _ = reply.send(Err(failure(&error)));
                }
            }
            _ => {}
        },
        SwarmEvent::Behaviour(BehaviourEvent::Manifest(event)) => match event {
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(reply) = pending.manifests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = pending.manifests.remove(&request_id) {
                    let _ = reply.send(Err(failure(&error)));
                }
            }
            _ => {}
        },
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            id,
            result: kad::QueryResult::GetProviders(result),
            step,
            ..
        })) => {
            if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                && let Some((_, found)) = pending.lookups.get_mut(&id)
            {
                for peer in providers {
                    // Dial now: the provider's addresses live only in the running query.
                    if !swarm.is_connected(&peer) {
                        let _ = swarm.dial(DialOpts::peer_id(peer).build());
                    }
                    found.push(peer);
                }
            }
            if step.last
                && let Some((reply, found)) = pending.lookups.remove(&id)
            {
                let _ = reply.send(found);
            }
        }
        _ => {}
    }
}

/// Fetches and parses a relay's `/api/info`.
pub async fn relay_info(url: &str) -> anyhow::Result<Info> {
    let body = http_get(url, "/api/info").await?;
    serde_json::from_str(&body).with_context(|| format!("{url}/api/info is not relay info"))
}

/// A minimal HTTP/1.1 GET over plain TCP, bounded in time and size; enough for a relay's API.
pub async fn http_get(url: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("relay URL {url} must start with http://"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| anyhow!("relay {url} did not answer in time"))?
        .with_context(|| format!("cannot reach relay {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{url} sent a malformed HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{url}{path} answered {status}");
    }
    Ok(body.to_owned())
}

/// The file name to save a download under: the manifest's name reduced to a plain file name.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    match cleaned.trim() {
        "" | "." | ".." => "download".into(),
        name => name.into(),
    }
}

/// Where `get` writes: `out` if it names a file, inside it if it is a directory, else the
/// manifest's name in the current directory.
pub fn output_path(out: Option<&Path>, name: &str) -> PathBuf {
    match out {
        Some(p) if p.is_dir() => p.join(safe_file_name(name)),
        Some(p) => p.to_owned(),
        None => PathBuf::from(safe_file_name(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_manifests_cannot_escape_the_directory() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("a\\b\\c.txt"), "c.txt");
        assert_eq!(safe_file_name(".."), "download");
        assert_eq!(safe_file_name("ok\u{7}.bin"), "ok.bin");
        assert_eq!(safe_file_name(""), "download");
    }

    #[test]
    fn only_tcp_and_quic_are_dialed_natively() {
        let ok = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"];
        let no = ["/ip4/127.0.0.1/tcp/1/ws", "/ip4/127.0.0.1/udp/1/webrtc-direct"];
        assert!(ok.iter().all(|a| native_dialable(&a.parse().unwrap())));
        assert!(!no.iter().any(|a| native_dialable(&a.parse().unwrap())));
    }
}

//! The native client: a small libp2p node that dials relays and drives `core`'s upload and
//! download engines over them. Used by `shardweb put`, `get` and `status`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol as Addr;
use libp2p::{Multiaddr, PeerId, noise, tcp};
use shardweb_core::manifest::SigningKey;
use shardweb_core::node::peer::{self, Peer};
use shardweb_core::node::{Fetched, Network, NetworkError, mux};
use shardweb_core::protocol::http_put::{PutAuth, RECEIPT_HEADER};
use shardweb_core::protocol::{
    MAX_BATCH, ManifestOutcome, PutOutcome, ShardRequest, ShardResponse,
};
use shardweb_core::{ManifestId, ShardId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::http::Info;
use crate::node::VERSION;

/// Connections the client opens to each relay. Requests to a peer are spread over its
/// connections, and each connection's TLS and yamux work runs in one task: with two, a transfer
/// through one relay uses both cores of a small machine (measured on 2 cores, 1 GiB put through
/// a local relay: 3.2 s against 3.3-3.7 s with one).
const CONNECTIONS_PER_RELAY: usize = 2;

/// A running client node. Dropping it stops the node.
#[derive(Debug)]
pub struct Client {
    peer: Peer,
    task: tokio::task::JoinHandle<()>,
    key: Keypair,
    /// Relays that take signed shard puts over HTTP, and where.
    http: Routes,
    /// Whether shards are put over HTTP where relays take them so.
    over_http: bool,
}

type Routes = Arc<Mutex<HashMap<PeerId, Arc<HttpPut>>>>;

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<PeerId, Arc<HttpPut>>> {
    routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts a client node with a fresh identity. It asks and never serves. With `over_http`,
    /// it puts shards over HTTP to the relays that take them so (see [`ClientNet`]).
    pub fn start(over_http: bool) -> anyhow::Result<Self> {
        let key = Keypair::generate_ed25519();
        let config = peer::Config::new(format!("shardweb-client/{VERSION}"), false);
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                (crate::tls::Config::new, noise::Config::new),
                mux::config,
            )?
            .with_quic()
            .with_relay_client(noise::Config::new, mux::config)?
            .with_behaviour(|key, relay| peer::Behaviour::new(key, relay, &config))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (peer, driver, _incoming) = Peer::new(swarm);
        let task = tokio::spawn(driver.run());
        Ok(Self { peer, task, key, http: Routes::default(), over_http })
    }

    /// The handle the download engine uses.
    pub fn peer(&self) -> Peer {
        self.peer.clone()
    }

    /// The network the upload engine uses: puts go over HTTP to the relays that take them so.
    pub fn net(&self) -> anyhow::Result<ClientNet> {
        let (peer, http) = (self.peer.clone(), Arc::clone(&self.http));
        Ok(ClientNet { peer, http, key: Arc::new(self.signing_key()?) })
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
        if let Some(path) = info.shard_put_http_path.as_deref().filter(|_| self.over_http) {
            match HttpPut::new(url, path) {
                Some(route) => drop(lock(&self.http).insert(peer, Arc::new(route))),
                None => tracing::warn!(relay = %url, %path, "ignoring a malformed put path"),
            }
        }
        let addrs: Vec<Multiaddr> = info
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(native_dialable)
            .collect();
        if addrs.is_empty() {
            bail!("relay {url} lists no TCP or QUIC address");
        }
        // TCP first, QUIC only where no TCP address answers. A dial given both races them,
        // and the winner carries every transfer: over QUIC a 1 GiB put on loopback took
        // 4.8 s and half again the client's CPU, against 3.3 s over TLS on TCP with large
        // multiplexer frames.
        let (tcp, quic): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|a| !a.iter().any(|p| p == Addr::QuicV1));
        let mut dialed = None;
        let mut failed = None;
        for addrs in [tcp, quic].into_iter().filter(|a| !a.is_empty()) {
            match self.peer.dial(peer, addrs.clone()).await {
                Ok(()) => {
                    dialed = Some(addrs);
                    break;
                }
                Err(e) => failed = Some(e),
            }
        }
        let Some(addrs) = dialed else {
            let why = failed.map_or_else(|| "no address".to_owned(), |e| e.to_string());
            bail!("cannot connect to relay {url}: {why}");
        };
        for _ in 1..CONNECTIONS_PER_RELAY {
            if let Err(e) = self.peer.dial_another(peer, addrs.clone()).await {
                tracing::debug!(relay = %url, error = %e, "transfers keep to fewer connections");
            }
        }
        Ok(peer)
    }

    /// Asks the DHT for the holders of a manifest and connects to them.
    pub async fn providers(&self, id: ManifestId) -> anyhow::Result<Vec<PeerId>> {
        Ok(self.peer.providers(id).await?)
    }
}

/// The client's network for uploads: libp2p, except that shard puts go over HTTP to the relays
/// that take them so (a signed `POST`, see [`shardweb_core::protocol::http_put`]). HTTP spares
/// both ends the TLS and multiplexing of a libp2p connection: on a 2-core machine a 1 GiB put
/// through a local relay is bound by CPU, and those are a large part of it. A relay whose
/// HTTP fails is sent puts over libp2p from then on, the failed one first.
#[derive(Debug, Clone)]
pub struct ClientNet {
    peer: Peer,
    http: Routes,
    key: Arc<SigningKey>,
}

impl ClientNet {
    async fn put_over_http(
        &self,
        peer: &PeerId,
        shards: &[(ShardId, Bytes)],
    ) -> Option<Vec<PutOutcome>> {
        let route = lock(&self.http).get(peer).cloned()?;
        match route.put(peer, &self.key, shards).await {
            Ok(outcomes) => Some(outcomes),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "puts over HTTP failed; putting over libp2p");
                lock(&self.http).remove(peer);
                None
            }
        }
    }
}

impl Network for ClientNet {
    type Peer = PeerId;

    async fn put_shards(
        &self,
        peer: &PeerId,
        shards: Vec<(ShardId, Bytes)>,
    ) -> Result<Vec<PutOutcome>, NetworkError> {
        match self.put_over_http(peer, &shards).await {
            Some(outcomes) => Ok(outcomes),
            None => self.peer.put_shards(peer, shards).await,
        }
    }

    async fn get_shards(
        &self,
        peer: &PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        self.peer.get_shards(peer, ids).await
    }

    async fn has_shards(
        &self,
        peer: &PeerId,
        ids: Vec<ShardId>,
    ) -> Result<Vec<bool>, NetworkError> {
        self.peer.has_shards(peer, ids).await
    }

    async fn put_manifest(
        &self,
        peer: &PeerId,
        manifest: Bytes,
    ) -> Result<ManifestOutcome, NetworkError> {
        self.peer.put_manifest(peer, manifest).await
    }

    async fn get_manifest(
        &self,
        peer: &PeerId,
        id: ManifestId,
    ) -> Result<Option<Bytes>, NetworkError> {
        self.peer.get_manifest(peer, id).await
    }
}

/// How long a put over HTTP has to be answered.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest put reply read: one outcome per shard, or a refusal.
const MAX_PUT_REPLY: usize = 3 + MAX_BATCH + 512;
/// The longest response head read.
const MAX_HEAD: u64 = 16 << 10;

/// A relay's route for signed puts over HTTP/1.1, with the connections it keeps open between
/// puts (one per put in flight).
#[derive(Debug)]
pub struct HttpPut {
    /// `host:port`.
    host: String,
    path: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl HttpPut {
    /// The route to `path` on the relay at `url` (`http://host:port`); `None` if either is
    /// not one.
    fn new(url: &str, path: &str) -> Option<Self> {
        let host = host_of(url).ok()?;
        let valid = |s: &str, extra: &[u8]| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
        };
        let path_ok = path.starts_with('/') && path.len() <= 256 && !path.contains("..");
        (valid(&host, b"-.:[]") && path_ok && valid(path, b"/-_.")).then(|| Self {
            host,
            path: path.into(),
            idle: Mutex::default(),
        })
    }

    /// Puts `shards` to `relay` signed with `key`; one outcome per shard, in order. A kept
    /// connection the relay has closed meanwhile is replaced once.
    async fn put(
        &self,
        relay: &PeerId,
        key: &SigningKey,
        shards: &[(ShardId, Bytes)],
    ) -> anyhow::Result<Vec<PutOutcome>> {
        let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let auth = PutAuth::sign(key, relay, now, &ids);
        let pieces = ShardRequest::Put(shards.to_vec()).frame().into_pieces();
        let len: usize = pieces.iter().map(Bytes::len).sum();
        let (host, path) = (&self.host, &self.path);
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\n"
        );
        for (name, value) in auth.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let exchange = async {
            let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let fresh = kept.is_none();
            let mut stream = match kept {
                Some(stream) => stream,
                None => self.connect().await?,
            };
            let mut answer = round_trip(&mut stream, &head, &pieces).await;
            if answer.is_err() && !fresh {
                // A kept connection that the relay has closed meanwhile fails on the write or
                // on the read; a put may be sent again (it changes nothing twice).
                stream = self.connect().await?;
                answer = round_trip(&mut stream, &head, &pieces).await;
            }
            let answer = answer?;
            if answer.keep
                && let Ok(mut idle) = self.idle.lock()
            {
                idle.push(stream);
            }
            Ok::<_, anyhow::Error>(answer)
        };
        let answer = tokio::time::timeout(PUT_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{host} did not answer a put in time"))??;
        if answer.status != 200 {
            let text = String::from_utf8_lossy(&answer.body);
            bail!("{host}{path} answered {}: {}", answer.status, text.trim());
        }
        // Only the relay itself can say that it stored the shards, whatever answers here.
        auth.check_receipt(relay, &answer.body, answer.receipt.as_deref())
            .with_context(|| format!("{host}{path}"))?;
        match ShardResponse::decode(answer.body.into())? {
            ShardResponse::Put(outcomes) if outcomes.len() == shards.len() => Ok(outcomes),
            ShardResponse::Refused(r) => bail!("{host} refused the put: {}", r.message),
            _ => bail!("{host} sent a reply that is not one for this put"),
        }
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&self.host).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A relay's answer to a put over HTTP.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// The receipt header's value, if any.
    receipt: Option<String>,
    /// Whether the connection may carry another request.
    keep: bool,
}

/// Sends a request and reads its answer.
async fn round_trip(
    stream: &mut TcpStream,
    head: &str,
    pieces: &[Bytes],
) -> anyhow::Result<Answer> {
    stream.write_all(head.as_bytes()).await?;
    for piece in pieces {
        stream.write_all(piece).await?;
    }
    stream.flush().await?;
    read_response(stream).await
}

/// Reads a response with a `Content-Length` body of at most [`MAX_PUT_REPLY`] bytes.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<Answer> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut head = (&mut reader).take(MAX_HEAD);
    head.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line {:?}", line.trim()))?;
    let (mut len, mut keep, mut receipt) = (None, true, None);
    loop {
        line.clear();
        if head.read_line(&mut line).await? == 0 {
            bail!("the response head was cut short");
        }
        if line.trim_end().is_empty() {
            break;
        }
        let Some((name, value)) = line.trim_end().split_once(':') else {
            bail!("malformed HTTP header line {:?}", line.trim_end());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<usize>().context("malformed Content-Length")?;
            if len.replace(n).is_some_and(|m| m != n) {
                bail!("conflicting Content-Length headers");
            }
        } else if name.eq_ignore_ascii_case(RECEIPT_HEADER) {
            receipt = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a put reply must declare its length");
        }
    }
    let len = len.ok_or_else(|| anyhow!("a put reply must declare its length"))?;
    if len > MAX_PUT_REPLY {
        bail!("a put reply of {len} bytes is over the limit");
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    // Nothing may follow the body: a reply is read whole before the next request is sent.
    let keep = keep && reader.buffer().is_empty();
    Ok(Answer { status, body, receipt, keep })
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

/// Fetches and parses a relay's `/api/info`.
pub async fn relay_info(url: &str) -> anyhow::Result<Info> {
    let body = http_get(url, "/api/info").await?;
    serde_json::from_str(&body).with_context(|| format!("{url}/api/info is not relay info"))
}

/// The `host:port` a relay URL (`http://host[:port][/...]`) names; port 80 if it names none.
fn host_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("relay URL {url} must start with http://"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let port = host.rsplit_once(':').map(|(_, port)| port).unwrap_or_default();
    let has_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    Ok(if has_port { host.to_owned() } else { format!("{host}:80") })
}

/// A minimal HTTP/1.1 GET over plain TCP, bounded in time and size; enough for a relay's API.
pub async fn http_get(url: &str, path: &str) -> anyhow::Result<String> {
    let host = host_of(url)?;
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await?;
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
    fn relay_urls_name_a_host_and_port() {
        assert_eq!(host_of("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(host_of("http://relay.example/x/").unwrap(), "relay.example:80");
        assert_eq!(host_of("http://[::1]").unwrap(), "[::1]:80");
        assert_eq!(host_of("http://[::1]:9/").unwrap(), "[::1]:9");
        assert!(host_of("https://relay.example").is_err());
        let route = HttpPut::new("http://127.0.0.1:8080/", "/api/shards").unwrap();
        assert_eq!((route.host.as_str(), route.path.as_str()), ("127.0.0.1:8080", "/api/shards"));
        assert!(HttpPut::new("http://127.0.0.1:8080", "/../x").is_none());
        assert!(HttpPut::new("http://a b", "/api/shards").is_none());
    }

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

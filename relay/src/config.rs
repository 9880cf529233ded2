//! The relay's configuration: a TOML file with documented defaults, overridden by command-line
//! flags and `SHARDWEB_*` environment variables (see `main.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Everything a relay can be told. Every field has a default that works on a laptop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where shards, manifests, the identity key and the WebRTC certificate live.
    /// Default `./shardweb-data`.
    pub data_dir: PathBuf,
    /// The HTTP address of the page and the API. Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// The directory of the web page served at `/` (the built `www/dist`). Default: none, and
    /// `/` shows the relay's status page.
    pub www: Option<PathBuf>,
    /// libp2p listen addresses. Default: loopback TCP 4001, WebSocket 4002, QUIC 4001 and
    /// WebRTC-direct 4002. Port 0 picks a free port; `/api/info` reports the real ones.
    pub listen: Vec<Multiaddr>,
    /// Addresses to advertise besides the listen addresses (a public address or DNS name).
    pub external: Vec<Multiaddr>,
    /// Relays to join at start, with `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Bytes of shards and manifests this relay keeps in all. Default 10 GiB.
    pub max_storage: u64,
    /// Bytes any one peer may store here. Default 2 GiB.
    pub max_storage_per_peer: u64,
    /// Seconds a peer has to answer a request. Default 60.
    pub request_timeout_secs: u64,
    /// Concurrent inbound streams per protocol. Default 64.
    pub max_concurrent_streams: usize,
    /// HTTP connections served at once; more wait to be accepted. Default 512.
    pub max_http_connections: usize,
    /// MiB of shards that replies to gets may hold in memory at once, over libp2p and HTTP
    /// together, until they are sent: a get past it has the shards that do not fit answered
    /// `deferred`, to be asked again. Default 256; at least 32 (one frame) is used.
    pub max_reply_mib: usize,
    /// Circuit relay: reservations in all and per peer. Defaults 128 and 4.
    pub max_reservations: usize,
    /// Circuit relay: reservations one peer may hold.
    pub max_reservations_per_peer: usize,
    /// Circuit relay: circuits in all and per peer. Defaults 64 and 8.
    pub max_circuits: usize,
    /// Circuit relay: circuits one peer may open.
    pub max_circuits_per_peer: usize,
    /// Circuit relay: bytes one circuit may carry. Default 1 GiB.
    pub max_circuit_bytes: u64,
    /// Circuit relay: seconds one circuit may last. Default 1800.
    pub max_circuit_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        let addr = |s: &str| s.parse().unwrap_or_else(|_| Multiaddr::empty());
        Self {
            data_dir: PathBuf::from("shardweb-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            www: None,
            listen: vec![
                addr("/ip4/127.0.0.1/tcp/4001"),
                addr("/ip4/127.0.0.1/tcp/4002/ws"),
                addr("/ip4/127.0.0.1/udp/4001/quic-v1"),
                addr("/ip4/127.0.0.1/udp/4002/webrtc-direct"),
            ],
            external: Vec::new(),
            bootstrap: Vec::new(),
            max_storage: 10 << 30,
            max_storage_per_peer: 2 << 30,
            request_timeout_secs: 60,
            max_concurrent_streams: 64,
            max_http_connections: 512,
            max_reply_mib: 256,
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_bytes: 1 << 30,
            max_circuit_secs: 1800,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are an error, missing ones take their defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config: Config = toml::from_str("max-storage = 1000\nhttp = \"127.0.0.1:9\"").unwrap();
        assert_eq!(config.max_storage, 1000);
        assert_eq!(config.http.port(), 9);
        assert_eq!(config.listen, Config::default().listen);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("max_storage = 1").is_err());
    }
}

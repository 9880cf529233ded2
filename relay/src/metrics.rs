//! The relay's counters, rendered as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome of one request, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused: malformed, too large, over quota.
    Refused,
    /// Failed inside the node.
    Error,
}

/// Counters updated by the node and read by the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by protocol (shard, manifest, shards over HTTP) and outcome.
    requests: [[AtomicU64; 3]; 3],
    /// Shard and manifest bytes received in requests.
    pub bytes_in: AtomicU64,
    /// Shard and manifest bytes sent in responses.
    pub bytes_out: AtomicU64,
    /// Peers connected now.
    pub peers: AtomicU64,
    /// Connections open now (a peer may have several).
    pub connections: AtomicU64,
}

/// Which protocol a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/shardweb/shard/1`
    Shard,
    /// `/shardweb/manifest/1`
    Manifest,
    /// `GET /api/shards/<id>`, one shard per request
    HttpShard,
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, protocol: Protocol, outcome: Outcome) {
        self.requests[protocol as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the store's figures.
    pub fn render(&self, store: &crate::store::DiskStore) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge("shardweb_shards_stored", "Shards held.", "gauge", store.shard_count());
        gauge(
            "shardweb_bytes_stored",
            "Bytes of shards and manifests held.",
            "gauge",
            store.used_bytes(),
        );
        gauge("shardweb_peers", "Peers connected.", "gauge", self.peers.load(Ordering::Relaxed));
        gauge(
            "shardweb_connections",
            "Connections established.",
            "gauge",
            self.connections.load(Ordering::Relaxed),
        );
        gauge(
            "shardweb_bytes_in_total",
            "Shard and manifest bytes received.",
            "counter",
            self.bytes_in.load(Ordering::Relaxed),
        );
        gauge(
            "shardweb_bytes_out_total",
            "Shard and manifest bytes sent.",
            "counter",
            self.bytes_out.load(Ordering::Relaxed),
        );
        let refusals = store.counters.quota_refusals.load(Ordering::Relaxed);
        gauge("shardweb_quota_refusals_total", "Puts refused for quota.", "counter", refusals);
        let corrupt = store.counters.corrupt_removed.load(Ordering::Relaxed);
        gauge(
            "shardweb_corrupt_shards_removed_total",
            "Shards that failed their hash on read and were removed.",
            "counter",
            corrupt,
        );
        let _ = writeln!(out, "# HELP shardweb_requests_total Requests by protocol and outcome.");
        let _ = writeln!(out, "# TYPE shardweb_requests_total counter");
        for (p, protocol) in ["shard", "manifest", "http_shard"].iter().enumerate() {
            for (o, outcome) in ["ok", "refused", "error"].iter().enumerate() {
                let n = self.requests[p][o].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "shardweb_requests_total{{protocol=\"{protocol}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }
}

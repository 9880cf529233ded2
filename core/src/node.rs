//! The upload and download engines, written against a [`Network`] that moves frames to peers,
//! so that the native client and the browser node share them; and [`peer`], the libp2p node
//! both of them run.
//!
//! Neither engine spawns: each drives its requests concurrently inside the caller's task, with
//! a bounded number in flight, so the same code runs on tokio and in a browser.

mod download;
pub mod mux;
mod network;
pub mod peer;
mod upload;

pub use download::{Download, DownloadError, Retries, fetch_manifest};
pub use network::{Fetched, Network, NetworkError};
pub use upload::{Upload, UploadError};

/// Progress of a transfer, reported after every stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Plaintext bytes done.
    pub bytes: u64,
    /// Plaintext bytes in all, when known.
    pub total: Option<u64>,
    /// Shard bytes sent or received over the network.
    pub wire_bytes: u64,
}

//! shardweb-core: what every shardweb node shares, with no I/O of its own.
//!
//! - [`codec`]: files into sealed, erasure-coded, content-addressed shards and back, as steps a
//!   host can drive (segment, seal, code, hash; verify, decode, open).
//! - [`manifest`]: the signed map of a file's shards, with its name and type sealed inside.
//! - [`link`]: the share link that carries a manifest id and the file key.
//! - [`protocol`]: the wire messages nodes exchange, with their hard limits.
//! - [`node`]: the upload and download engines, over any [`node::Network`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod codec;
pub mod link;
pub mod manifest;
pub mod node;
pub mod protocol;
mod wire;

pub use codec::{Decoder, Encoder, FileId, FileKey, Params, ShardId, Stripe};
pub use link::Link;
pub use manifest::{FileMeta, Manifest, ManifestId};

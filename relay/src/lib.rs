//! shardweb's native node: the relay and the command-line client, as a library so that the
//! binary stays thin and every part is testable in process.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod config;
pub mod direct;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod server;
pub mod stall;
pub mod store;
pub mod tls;

//! shardweb-wasm: the browser node, compiled to WebAssembly and wrapped by the `shardweb` npm
//! package.
//!
//! In a browser (the `wasm_browser` cfg) it is a full node: it seals segments with WebCrypto,
//! codes them with `core`, keeps shards, manifests and transfer state in IndexedDB, joins the
//! swarm over WebSocket (and WebRTC-direct where the scope has WebRTC), reserves a circuit
//! slot on its relays and serves what it holds to other peers. [`WasmNode`] is its JavaScript
//! API. Elsewhere only the link helpers compile.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The browser build codes with core's SIMD128 Reed–Solomon engine and BLAKE3's SIMD128 code:
// without the target feature both would silently fall back to portable code, several times
// slower. `.cargo/config.toml` turns it on; a `RUSTFLAGS` of one's own replaces that. (Not
// checked where rustdoc collects doctests: it compiles without the target's flags.)
#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128"), not(doctest)))]
compile_error!(
    "build the browser node with SIMD128: RUSTFLAGS='-C target-feature=+simd128' (as \
     .cargo/config.toml sets it)"
);

use wasm_bindgen::prelude::*;

#[cfg(wasm_browser)]
mod api;
#[cfg(wasm_browser)]
mod bench;
#[cfg(wasm_browser)]
mod download;
#[cfg(wasm_browser)]
pub mod error;
#[cfg(wasm_browser)]
mod file_read;
#[cfg(wasm_browser)]
mod files;
#[cfg(wasm_browser)]
mod helper_worker;
#[cfg(wasm_browser)]
mod http_shards;
#[cfg(wasm_browser)]
pub mod idb_store;
#[cfg(wasm_browser)]
mod net;
#[cfg(wasm_browser)]
mod node;
#[cfg(wasm_browser)]
mod post_worker;
#[cfg(wasm_browser)]
mod progress;
#[cfg(wasm_browser)]
mod relays;
#[cfg(wasm_browser)]
mod serve;
#[cfg(wasm_browser)]
mod stats;
#[cfg(wasm_browser)]
mod tab_lock;
#[cfg(wasm_browser)]
mod upload;
#[cfg(wasm_browser)]
pub mod webcrypto;
#[cfg(wasm_browser)]
pub mod websocket;

#[cfg(wasm_browser)]
pub use api::WasmNode;

/// The version of this build, as in `Cargo.toml`.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Checks a share link in any of its forms and returns its manifest id; a malformed link
/// rejects with an `Error` whose message says what is wrong (never echoing the key).
#[wasm_bindgen(js_name = manifestIdOfLink)]
pub fn manifest_id_of_link(link: &str) -> Result<String, JsError> {
    shardweb_core::Link::parse(link).map(|l| l.manifest.to_string()).map_err(JsError::from)
}

/// Sends the node's logs to the browser console at `level` (once; later calls do nothing).
#[cfg(wasm_browser)]
pub(crate) fn init_logging(level: &str) {
    use std::sync::Once;
    static INIT: Once = Once::new();
    let level = match level {
        "error" => tracing::Level::ERROR,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    INIT.call_once(|| {
        let config = tracing_wasm::WASMLayerConfigBuilder::new().set_max_level(level).build();
        tracing_wasm::set_as_global_default_with_config(config);
    });
}

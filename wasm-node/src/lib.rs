//! shardweb-wasm: the browser node's WebAssembly API, wrapped by the `shardweb` npm package.
//!
//! This first slice exposes link handling and the build's identity; the node itself (IndexedDB
//! store, swarm, put and get) is built on the same `shardweb-core` codec.

use wasm_bindgen::prelude::*;

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

//! Shards fetched from a relay over plain HTTP (`GET /api/shards/<id>`, see
//! [`shardweb_core::protocol::SHARD_HTTP_PATH`]), beside the libp2p shard protocol.
//!
//! A shard is public ciphertext named by its hash, so reading one needs no identity: the
//! caller checks every shard against its id, as it does a libp2p reply. What HTTP saves is the
//! browser's own work: the bytes arrive through the browser's network stack instead of through
//! Noise and yamux in wasm on the node's thread.

use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, join_all, select};
use js_sys::{Function, Promise, Reflect, Uint8Array};
use shardweb_core::ShardId;
use shardweb_core::node::NetworkError;
use shardweb_core::protocol::{MAX_SHARD_BYTES, ShardStatus};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::describe;

/// How long one shard has to arrive.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The longest shard path a relay may name in its `/api/info`.
const MAX_PATH: usize = 256;

/// The URL under which a relay at `url` serves shards, from the path its `/api/info` names;
/// `None` for a path that is not one (then the relay is asked over libp2p only).
pub fn base_url(url: &str, path: &str) -> Option<String> {
    let valid = path.len() <= MAX_PATH
        && path.starts_with('/')
        && path.ends_with('/')
        && !path.contains("//")
        && !path.contains("..")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    valid.then(|| format!("{}{path}", url.trim_end_matches('/')))
}

/// Fetches each shard from `base` (all at once; the browser bounds its connections per
/// relay). One status per id, in order, not yet checked against the ids. Fails as a whole on
/// the first request that neither finds the shard nor says it is not held, so that the
/// caller can ask over libp2p instead.
pub async fn get_shards(base: &str, ids: &[ShardId]) -> Result<Vec<ShardStatus>, NetworkError> {
    join_all(ids.iter().map(|id| get_shard(base, id))).await.into_iter().collect()
}

async fn get_shard(base: &str, id: &ShardId) -> Result<ShardStatus, NetworkError> {
    let url = format!("{base}{id}");
    let unreachable =
        |detail: String| NetworkError::Unreachable { detail: format!("{url}: {detail}") };
    let invalid =
        |detail: String| NetworkError::InvalidReply { detail: format!("{url}: {detail}") };
    let global = js_sys::global();
    let fetch = Reflect::get(&global, &"fetch".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or_else(|| unreachable("this scope has no fetch".into()))?;
    let abort = web_sys::AbortController::new().map_err(|e| unreachable(describe(&e)))?;
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(&abort.signal()));
    // Past the browser's HTTP cache: it would write every shard to disk a second time.
    init.set_cache(web_sys::RequestCache::NoStore);
    let request = async {
        let promise = fetch
            .call2(&global, &JsValue::from(url.as_str()), &init)
            .map_err(|e| unreachable(describe(&e)))?
            .unchecked_into::<Promise>();
        let response: web_sys::Response =
            JsFuture::from(promise).await.map_err(|e| unreachable(describe(&e)))?.unchecked_into();
        match response.status() {
            200 => {}
            404 => return Ok(ShardStatus::Missing),
            status => return Err(unreachable(format!("answered {status}"))),
        }
        // The browser holds a body to its declared length, so a bounded length bounds it.
        let length = response.headers().get("content-length").ok().flatten();
        match length.and_then(|l| l.parse::<usize>().ok()) {
            Some(n) if n <= MAX_SHARD_BYTES => {}
            Some(n) => return Err(invalid(format!("a shard of {n} bytes is over the limit"))),
            None => return Err(invalid("no content length".into())),
        }
        let body = response.array_buffer().map_err(|e| unreachable(describe(&e)))?;
        let body = JsFuture::from(body).await.map_err(|e| unreachable(describe(&e)))?;
        let bytes = Uint8Array::new(&body);
        if bytes.length() as usize > MAX_SHARD_BYTES {
            return Err(invalid("the shard is over the limit".into()));
        }
        Ok(ShardStatus::Found(Bytes::from(bytes.to_vec())))
    };
    match select(Box::pin(request), futures_timer::Delay::new(TIMEOUT)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            abort.abort();
            Err(NetworkError::Timeout)
        }
    }
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn a_relay_names_a_path_not_another_origin() {
        let url = "http://127.0.0.1:8080/";
        assert_eq!(
            base_url(url, "/api/shards/").as_deref(),
            Some("http://127.0.0.1:8080/api/shards/")
        );
        for bad in [
            "api/shards/",
            "/api/shards",
            "//evil.example/",
            "/api/../x/",
            "/a?b/",
            "/a b/",
            "/é/",
            "",
        ] {
            assert_eq!(base_url(url, bad), None, "{bad:?}");
        }
        assert_eq!(base_url(url, &format!("/{}/", "a".repeat(MAX_PATH))), None);
    }
}

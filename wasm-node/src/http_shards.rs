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
use js_sys::{Promise, Reflect, Uint8Array};
use shardweb_core::ShardId;
use shardweb_core::node::NetworkError;
use shardweb_core::protocol::{MAX_SHARD_BYTES, ShardStatus};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::describe;
use crate::relays;

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
/// relay). One status per id, in order, not yet checked against the ids; fails if any
/// request neither found its shard nor was told it is not held, so that the caller can ask
/// over libp2p instead.
pub async fn get_shards(base: &str, ids: &[ShardId]) -> Result<Vec<ShardStatus>, NetworkError> {
    join_all(ids.iter().map(|id| get_shard(base, id))).await.into_iter().collect()
}

async fn get_shard(base: &str, id: &ShardId) -> Result<ShardStatus, NetworkError> {
    let url = format!("{base}{id}");
    let unreachable =
        |detail: String| NetworkError::Unreachable { detail: format!("{url}: {detail}") };
    let (global, fetch) =
        relays::fetch().ok_or_else(|| unreachable("this scope has no fetch".into()))?;
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
            200 => read_body(&response, &url).await.map(ShardStatus::Found),
            404 => Ok(ShardStatus::Missing),
            status => Err(unreachable(format!("answered {status}"))),
        }
    };
    let result = match select(Box::pin(request), futures_timer::Delay::new(TIMEOUT)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(NetworkError::Timeout),
    };
    // Whatever is left of the response (after a refusal, a timeout, a body over the limit)
    // is not downloaded; after a whole body this does nothing.
    abort.abort();
    result
}

/// Reads a shard's body, counting as it goes: a body past [`MAX_SHARD_BYTES`] is refused as
/// soon as it passes, whatever length it declared (a compressed body declares less).
async fn read_body(response: &web_sys::Response, url: &str) -> Result<Bytes, NetworkError> {
    let failed = |detail: String| NetworkError::Unreachable { detail: format!("{url}: {detail}") };
    let invalid = |detail: &str| NetworkError::InvalidReply { detail: format!("{url}: {detail}") };
    let over = || invalid("the shard is over the size limit");
    let declared = response.headers().get("content-length").ok().flatten();
    let declared = declared.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    if declared > MAX_SHARD_BYTES {
        return Err(over());
    }
    let Some(body) = response.body() else {
        return Ok(Bytes::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(declared);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| failed(describe(&e)))?;
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(Bytes::from(bytes));
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(|e| failed(describe(&e)))?;
        let value: Uint8Array =
            value.dyn_into().map_err(|_| invalid("a body chunk is not bytes"))?;
        let start = bytes.len();
        let end = start + value.length() as usize;
        if end > MAX_SHARD_BYTES {
            return Err(over());
        }
        bytes.resize(end, 0);
        value.copy_to(&mut bytes[start..]);
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

    /// A body is read whole up to the limit, and refused once it passes it, whether or not it
    /// declared a length (these bodies declare none).
    #[wasm_bindgen_test]
    async fn a_body_past_the_limit_is_refused_as_it_comes() {
        for len in [0, 1000, MAX_SHARD_BYTES, MAX_SHARD_BYTES + 1] {
            let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let response = web_sys::Response::new_with_opt_u8_array(Some(&mut bytes)).unwrap();
            assert_eq!(response.headers().get("content-length").unwrap(), None);
            match read_body(&response, "test").await {
                Ok(read) if len <= MAX_SHARD_BYTES => assert!(read == bytes, "{len} bytes differ"),
                Err(NetworkError::InvalidReply { .. }) if len > MAX_SHARD_BYTES => {}
                other => panic!("{len} bytes: {:?}", other.map(|b| b.len())),
            }
        }
    }
}

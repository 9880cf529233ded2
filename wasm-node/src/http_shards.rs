//! Shards fetched from a relay over plain HTTP (`GET /api/shards/<id>`, see
//! [`shardweb_core::protocol::SHARD_HTTP_PATH`]) and put to it (a signed `POST /api/shards`,
//! see [`shardweb_core::protocol::http_put`]), beside the libp2p shard protocol.
//!
//! A shard is public ciphertext named by its hash, so reading one needs no identity: the
//! caller checks every shard against its id, as it does a libp2p reply. A put is signed with
//! this node's identity key, so that the relay charges it to this node as it would over
//! libp2p. What HTTP saves is the browser's own work: the bytes go through the browser's
//! network stack instead of through Noise and yamux in wasm on the node's thread.

use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, join_all, select};
use js_sys::{Promise, Reflect, Uint8Array};
use libp2p::PeerId;
use shardweb_core::ShardId;
use shardweb_core::manifest::SigningKey;
use shardweb_core::node::NetworkError;
use shardweb_core::protocol::http_put::{PutAuth, RECEIPT_HEADER};
use shardweb_core::protocol::{
    MAX_BATCH, MAX_FRAME_BYTES, MAX_SHARD_BYTES, PutOutcome, ShardRequest, ShardResponse,
    ShardStatus, batch_path,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::describe;
use crate::helper_worker::{BUFFER_STEP, Spares};
use crate::post_worker::Posted;
use crate::relays;

/// How long one shard has to arrive, or one put to be answered.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest put reply: one outcome per shard, or a refusal.
const MAX_PUT_REPLY: usize = 3 + MAX_BATCH + 512;
/// The longest shard path a relay may name in its `/api/info`.
const MAX_PATH: usize = 256;

/// The URL under which a relay at `url` serves shards, from the path its `/api/info` names;
/// `None` for a path that is not one (then the relay is asked over libp2p only).
pub fn base_url(url: &str, path: &str) -> Option<String> {
    path.ends_with('/').then(|| put_url(url, path))?
}

/// The URL to which a relay at `url` takes puts, from the path its `/api/info` names; `None`
/// for a path that is not one (then shards are put over libp2p only).
pub fn put_url(url: &str, path: &str) -> Option<String> {
    let valid = path.len() <= MAX_PATH
        && path.starts_with('/')
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
    let init = web_sys::RequestInit::new();
    let url = url.as_str();
    exchange(url, init, |response| async move {
        match response.status() {
            200 => read_body(&response, url, MAX_SHARD_BYTES).await.map(ShardStatus::Found),
            404 => Ok(ShardStatus::Missing),
            status => Err(unreachable(url, format!("answered {status}"))),
        }
    })
    .await
}

/// Fetches the shards `ids` names (at most [`shardweb_core::protocol::MAX_HTTP_BATCH`]) in one request to `base`,
/// whose reply is the shard protocol's get reply: one status per id, in order, not yet
/// checked against the ids. Fails on anything else, so that the caller can ask another way.
pub async fn get_batch(base: &str, ids: &[ShardId]) -> Result<Vec<ShardStatus>, NetworkError> {
    let url = format!("{base}{}", batch_path(ids));
    let url = url.as_str();
    exchange(url, web_sys::RequestInit::new(), |response| async move {
        if response.status() != 200 {
            return Err(unreachable(url, format!("answered {}", response.status())));
        }
        let reply = read_body(&response, url, MAX_FRAME_BYTES).await?;
        let invalid = |detail: String| NetworkError::InvalidReply { detail };
        match ShardResponse::decode(reply).map_err(|e| invalid(format!("{url}: {e}")))? {
            ShardResponse::Get(statuses) if statuses.len() == ids.len() => Ok(statuses),
            ShardResponse::Refused(refusal) => Err(NetworkError::Refused(refusal)),
            _ => Err(invalid(format!("{url}: not a get reply for {} shards", ids.len()))),
        }
    })
    .await
}

/// Puts `shards` to `relay` at `url`, signed with `key`: one outcome per shard, in order, as
/// a put over libp2p answers, taken only with the relay's receipt (see
/// [`shardweb_core::protocol::http_put`]). Fails if the relay did not answer with a put reply, so that the
/// caller can put over libp2p instead (a put may be repeated: it changes nothing twice).
pub async fn put_shards(
    url: &str,
    relay: &PeerId,
    key: &SigningKey,
    shards: &[(ShardId, Bytes)],
) -> Result<Vec<PutOutcome>, NetworkError> {
    let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
    let now = (js_sys::Date::now() / 1000.0) as u64;
    let auth = PutAuth::sign(key, relay, now, &ids);
    let content_type = [("content-type", "application/octet-stream".to_owned())];
    let headers: Vec<(&str, String)> = content_type.into_iter().chain(auth.headers()).collect();
    let pieces = ShardRequest::Put(shards.to_vec()).frame().into_pieces();
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let answer = |status: u16, receipt: Option<String>, reply: Vec<u8>| {
        if status != 200 {
            return Err(unreachable(url, format!("answered {status}")));
        }
        let invalid = |detail: String| NetworkError::InvalidReply { detail };
        // Only the relay itself can say that it stored the shards, whatever answers here.
        auth.check_receipt(relay, &reply, receipt.as_deref())
            .map_err(|e| invalid(format!("{url}: {e}")))?;
        match ShardResponse::decode(reply.into()).map_err(|e| invalid(format!("{url}: {e}")))? {
            ShardResponse::Put(outcomes) if outcomes.len() == shards.len() => Ok(outcomes),
            ShardResponse::Refused(refusal) => Err(NetworkError::Refused(refusal)),
            _ => Err(invalid(format!("{url}: not a put reply for {} shards", shards.len()))),
        }
    };
    let fill = |body: &Uint8Array| write_pieces(body, &pieces);
    // On the post worker where there is one; else (or where it cannot run) on this thread.
    if let Some(mut pending) = crate::post_worker::post_worker()
        .and_then(|w| w.post(url, &headers, len, fill, MAX_PUT_REPLY))
    {
        let posted =
            match select(Box::pin(pending.answer()), futures_timer::Delay::new(TIMEOUT)).await {
                Either::Left((posted, _)) => posted,
                Either::Right(_) => return Err(NetworkError::Timeout),
            };
        match posted {
            Posted::Done { status, receipt, reply } => return answer(status, receipt, reply),
            Posted::Failed(why) => return Err(unreachable(url, why)),
            Posted::Unavailable => {}
        }
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let init_headers = web_sys::Headers::new().map_err(|e| unreachable(url, describe(&e)))?;
    for (name, value) in &headers {
        init_headers.append(name, value).map_err(|e| unreachable(url, describe(&e)))?;
    }
    init.set_headers(&init_headers);
    let body = BODIES.with(|b| b.borrow_mut().empty(len));
    write_pieces(&body, &pieces);
    init.set_body(&body);
    // `fetch` takes a copy of the body before it returns (the Fetch standard's "extract a
    // body"), so the buffer carries the next put's body as soon as this one is sent.
    let sent = || BODIES.with(|b| b.borrow_mut().keep(body.buffer()));
    exchange_then(url, init, sent, |response| async move {
        let receipt = response.headers().get(RECEIPT_HEADER).ok().flatten();
        let reply = if response.status() == 200 {
            read_body(&response, url, MAX_PUT_REPLY).await?.to_vec()
        } else {
            Vec::new()
        };
        answer(response.status(), receipt, reply)
    })
    .await
}

/// Writes a put's body: the frame's pieces (the shards' own bytes among them) one after
/// another into `body`, exactly as long, copied once. A `Blob` made from views of wasm memory
/// instead spares the node's thread the copy (its CPU per 128 MiB put 1.04-1.26 s against
/// 1.41-1.52 s) but costs the browser process more (0.95-1.8 s against 0.55-0.62 s), and
/// moved no more bytes on 2 cores (39-61 MB/s against 59-62).
fn write_pieces(body: &Uint8Array, pieces: &[Bytes]) {
    let mut at = 0;
    for piece in pieces {
        body.subarray(at, at + piece.len() as u32).copy_from(piece);
        at += piece.len() as u32;
    }
}

thread_local! {
    /// The buffer of the put body last sent, to carry the next one: filling a fresh buffer
    /// costs the first touch of new memory, several times a plain copy. A body is made and
    /// sent in one run of this thread, so one buffer serves every put; bodies over 8 MiB
    /// (a lone large shard) are not kept.
    static BODIES: std::cell::RefCell<Spares<{ (8 << 20) + BUFFER_STEP }>> =
        std::cell::RefCell::default();
}

fn unreachable(url: &str, detail: String) -> NetworkError {
    NetworkError::Unreachable { detail: format!("{url}: {detail}") }
}

/// Fetches `url` with `init` and hands the response to `read`, all within [`TIMEOUT`]; the
/// request bypasses the browser's HTTP cache, and whatever is left of the response when `read`
/// ends (after a refusal, a timeout, a body over the limit) is not downloaded.
async fn exchange<T, F>(
    url: &str,
    init: web_sys::RequestInit,
    read: impl FnOnce(web_sys::Response) -> F,
) -> Result<T, NetworkError>
where
    F: std::future::Future<Output = Result<T, NetworkError>>,
{
    exchange_then(url, init, || {}, read).await
}

/// [`exchange`], calling `sent` once `fetch` has been called (whether or not the call
/// succeeded; not at all when this scope has no `fetch` or no `AbortController`).
async fn exchange_then<T, F>(
    url: &str,
    init: web_sys::RequestInit,
    sent: impl FnOnce(),
    read: impl FnOnce(web_sys::Response) -> F,
) -> Result<T, NetworkError>
where
    F: std::future::Future<Output = Result<T, NetworkError>>,
{
    let (global, fetch) =
        relays::fetch().ok_or_else(|| unreachable(url, "this scope has no fetch".into()))?;
    let abort = web_sys::AbortController::new().map_err(|e| unreachable(url, describe(&e)))?;
    init.set_signal(Some(&abort.signal()));
    // Past the browser's HTTP cache: it would write every shard to disk a second time.
    init.set_cache(web_sys::RequestCache::NoStore);
    let request = async {
        let called = fetch.call2(&global, &JsValue::from(url), &init);
        sent();
        let promise =
            called.map_err(|e| unreachable(url, describe(&e)))?.unchecked_into::<Promise>();
        let response = JsFuture::from(promise).await.map_err(|e| unreachable(url, describe(&e)))?;
        read(response.unchecked_into()).await
    };
    let result = match select(Box::pin(request), futures_timer::Delay::new(TIMEOUT)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(NetworkError::Timeout),
    };
    abort.abort();
    result
}

/// Reads a body of at most `max` bytes, counting as it goes: a body past `max` is refused as
/// soon as it passes, whatever length it declared (a compressed body declares less).
pub(crate) async fn read_body(
    response: &web_sys::Response,
    url: &str,
    max: usize,
) -> Result<Bytes, NetworkError> {
    let failed = |detail: String| NetworkError::Unreachable { detail: format!("{url}: {detail}") };
    let invalid = |detail: &str| NetworkError::InvalidReply { detail: format!("{url}: {detail}") };
    let over = || invalid("the body is over the size limit");
    let declared = response.headers().get("content-length").ok().flatten();
    let declared = declared.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
    if declared > max {
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
        if end > max {
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
        assert_eq!(
            put_url(url, "/api/shards").as_deref(),
            Some("http://127.0.0.1:8080/api/shards")
        );
        assert_eq!(put_url(url, "//evil.example/x"), None);
        assert_eq!(put_url(url, "api/shards"), None);
    }

    /// A put's body is the put request's frame, byte for byte, whatever the shards, also in
    /// the buffer of a larger body sent before it.
    #[wasm_bindgen_test]
    fn a_put_body_is_the_put_frame() {
        let sizes = [vec![1 << 20; 6], vec![0], vec![1, 2, 3], vec![5_000_000, 17], vec![9]];
        for sizes in sizes {
            let shards: Vec<(ShardId, Bytes)> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let bytes =
                        Bytes::from((0..n).map(|j| (i * 31 + j % 251) as u8).collect::<Vec<u8>>());
                    (ShardId::of(&bytes), bytes)
                })
                .collect();
            let pieces = ShardRequest::Put(shards.clone()).frame().into_pieces();
            let body = BODIES.with(|b| b.borrow_mut().empty(pieces.iter().map(Bytes::len).sum()));
            write_pieces(&body, &pieces);
            assert!(body.to_vec() == ShardRequest::Put(shards).encode(), "{sizes:?}");
            BODIES.with(|b| b.borrow_mut().keep(body.buffer()));
        }
        // One buffer carried them all.
        assert_eq!(BODIES.with(|b| b.borrow().made()), 1);
    }

    /// A body is read whole up to the limit, and refused once it passes it, whether or not it
    /// declared a length (these bodies declare none).
    #[wasm_bindgen_test]
    async fn a_body_past_the_limit_is_refused_as_it_comes() {
        for len in [0, 1000, MAX_SHARD_BYTES, MAX_SHARD_BYTES + 1] {
            let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let response = web_sys::Response::new_with_opt_u8_array(Some(&mut bytes)).unwrap();
            assert_eq!(response.headers().get("content-length").unwrap(), None);
            match read_body(&response, "test", MAX_SHARD_BYTES).await {
                Ok(read) if len <= MAX_SHARD_BYTES => assert!(read == bytes, "{len} bytes differ"),
                Err(NetworkError::InvalidReply { .. }) if len > MAX_SHARD_BYTES => {}
                other => panic!("{len} bytes: {:?}", other.map(|b| b.len())),
            }
        }
    }
}

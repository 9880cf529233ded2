//! The relay's HTTP server: the page at `/`, `/api/info` (what a browser or client needs to
//! dial this relay), `/api/shards/<id>` (a shard's bytes), `/api/shard-batch/<id>,<id>,…`
//! (several shards in one get reply frame), `POST /api/shards` (shards put by a signed
//! request), `/api/health` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use shardweb_core::ShardId;
use shardweb_core::protocol::http_put::{
    KEY_HEADER, PutAuth, RECEIPT_HEADER, SHARD_PUT_HTTP_PATH, SIGNATURE_HEADER, TIME_HEADER,
};
use shardweb_core::protocol::{
    MANIFEST_PROTOCOL, MAX_BATCH, MAX_FRAME_BYTES, MAX_SHARD_BYTES, SHARD_BATCH_HTTP_PATH,
    SHARD_HTTP_PATH, SHARD_PROTOCOL, ShardRequest, ShardResponse, ShardStatus, parse_batch_path,
};
use tokio::sync::Semaphore;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::metrics::{Outcome, Protocol};
use crate::node::{Shared, VERSION};
use crate::{server, store};

/// What `/api/info` answers.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Info {
    /// The relay's peer id.
    pub peer_id: String,
    /// Multiaddrs to dial, each with `/p2p/<peer id>`; WebRTC-direct ones carry the certhash.
    pub addrs: Vec<String>,
    /// shardweb's version.
    pub version: String,
    /// The shardweb protocols served.
    pub protocols: Vec<String>,
    /// The HTTP path under which shards are served by id (`/api/shards/`); absent from
    /// relays that serve shards only over libp2p.
    #[serde(default)]
    pub shard_http_path: Option<String>,
    /// The HTTP path to which shards may be put by a signed `POST` (`/api/shards`, see
    /// [`shardweb_core::protocol::http_put`]); absent from relays that take puts only over
    /// libp2p.
    #[serde(default)]
    pub shard_put_http_path: Option<String>,
    /// The HTTP path under which several shards are served in one response, their ids joined
    /// by commas (`/api/shard-batch/`, see [`SHARD_BATCH_HTTP_PATH`]); absent from relays that
    /// serve shards one per request only.
    #[serde(default)]
    pub shard_batch_http_path: Option<String>,
    /// Limits in force.
    pub limits: InfoLimits,
}

/// The limits a client must respect.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct InfoLimits {
    /// Bytes this relay keeps in all.
    pub max_storage: u64,
    /// Bytes one peer may store here.
    pub max_storage_per_peer: u64,
    /// Largest shard accepted.
    pub max_shard_bytes: usize,
    /// Largest message.
    pub max_frame_bytes: usize,
    /// Most ids in one request.
    pub max_batch: usize,
}

/// The relay's routes, over its shared state: the API, and the web page from the `www`
/// directory when one is configured (else the status page at `/`).
pub fn router(shared: Arc<Shared>) -> Router {
    // Any page may bootstrap from a relay's public info, whatever its origin.
    let public = SetResponseHeaderLayer::overriding(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // Shard reads over HTTP, like shard streams over libp2p, run a bounded number at a time:
    // the others wait their turn holding no shard.
    let permits = Arc::new(Semaphore::new(shared.config.max_concurrent_streams.max(1)));
    let batch = {
        let permits = Arc::clone(&permits);
        move |state, ids| shard_batch(state, ids, Arc::clone(&permits))
    };
    let shard = move |state, id| shard(state, id, Arc::clone(&permits));
    // Puts over HTTP reserve their declared length from a budget of their own before their
    // body is read: slow or abandoned bodies hold at most that, and never the reads' permits.
    let budget = Arc::new(Semaphore::new(PUT_BUDGET_MIB));
    let put = move |state, headers, body| put_shards(state, headers, body, Arc::clone(&budget));
    let api = Router::new()
        .route("/api/info", get(info))
        .route("/api/health", get(health))
        .route(&format!("{SHARD_HTTP_PATH}{{id}}"), get(shard))
        .route(&format!("{SHARD_BATCH_HTTP_PATH}{{ids}}"), get(batch))
        .route(SHARD_PUT_HTTP_PATH, axum::routing::post(put).options(put_preflight))
        .layer(public);
    let router =
        Router::new().merge(api).route("/status", get(page)).route("/metrics", get(metrics));
    let router = match &shared.config.www {
        Some(dir) => {
            let files = ServeDir::new(dir).append_index_html_on_directories(true);
            // The page and its worker change with every release: browsers revalidate them.
            let revalidate = SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            router.fallback_service(files).layer(revalidate)
        }
        None => router
            .route("/", get(page))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") }),
    };
    router.with_state(shared)
}

/// The info of the running node.
pub fn info_of(shared: &Shared) -> Info {
    let addrs = shared.addrs.read().map(|a| a.iter().map(ToString::to_string).collect());
    Info {
        peer_id: shared.peer_id.to_string(),
        addrs: addrs.unwrap_or_default(),
        version: VERSION.into(),
        protocols: vec![SHARD_PROTOCOL.into(), MANIFEST_PROTOCOL.into()],
        shard_http_path: Some(SHARD_HTTP_PATH.into()),
        shard_put_http_path: Some(SHARD_PUT_HTTP_PATH.into()),
        shard_batch_http_path: Some(SHARD_BATCH_HTTP_PATH.into()),
        limits: InfoLimits {
            max_storage: shared.config.max_storage,
            max_storage_per_peer: shared.config.max_storage_per_peer,
            max_shard_bytes: MAX_SHARD_BYTES,
            max_frame_bytes: MAX_FRAME_BYTES,
            max_batch: MAX_BATCH,
        },
    }
}

async fn info(State(shared): State<Arc<Shared>>) -> Json<Info> {
    Json(info_of(&shared))
}

/// A shard's bytes, checked against its id as they are read: 404 when not held (or found
/// corrupt, and then removed). Shards never change, so caches may keep them for good.
async fn shard(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    permits: Arc<Semaphore>,
) -> Response {
    let Ok(id) = id.parse::<ShardId>() else {
        shared.metrics.request(Protocol::HttpShard, Outcome::Refused);
        return (StatusCode::BAD_REQUEST, "a shard id is 64 lowercase hex digits\n")
            .into_response();
    };
    // The reply holds its shard's room in the reply budget until sent, as a get's do, taken
    // from the recorded length before the shard is read (and before a read permit is held).
    let len = shared.store.shard_len(&id).ok().flatten().unwrap_or(0);
    let room = usize::try_from(len).unwrap_or(usize::MAX);
    let Some(budget) = shared.replies.take(room, shared.config.request_timeout()).await else {
        shared.metrics.request(Protocol::HttpShard, Outcome::Refused);
        return (StatusCode::SERVICE_UNAVAILABLE, "busy: ask again later\n").into_response();
    };
    let Ok(permit) = permits.acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let store = Arc::clone(&shared.store);
    let read = tokio::task::spawn_blocking(move || store.get_shard(&id)).await;
    let (outcome, response) = match read {
        Ok(Ok(Some(bytes))) => {
            tracing::debug!(shard = %id, "serving shard over HTTP");
            shared
                .metrics
                .bytes_out
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_LENGTH, &bytes.len().to_string()),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ];
            (Outcome::Ok, (headers, held(vec![bytes], (permit, budget))).into_response())
        }
        Ok(Ok(None) | Err(store::Error::Corrupt { .. })) => {
            (Outcome::Ok, (StatusCode::NOT_FOUND, "shard not held here\n").into_response())
        }
        Ok(Err(e)) => {
            tracing::error!(shard = %id, error = %e, "cannot read shard");
            (
                Outcome::Error,
                (StatusCode::INTERNAL_SERVER_ERROR, "cannot read shard\n").into_response(),
            )
        }
        Err(e) => {
            tracing::error!(shard = %id, error = %e, "shard read stopped");
            (
                Outcome::Error,
                (StatusCode::INTERNAL_SERVER_ERROR, "cannot read shard\n").into_response(),
            )
        }
    };
    shared.metrics.request(Protocol::HttpShard, outcome);
    response
}

/// Several shards in one response: the shard protocol's get reply frame for the ids the path
/// names, one status per id (a shard not held, or found corrupt, is `missing`), as a get over
/// libp2p answers, under one read permit as one libp2p request holds one stream. The frame's
/// pieces go out as they are, with their length declared.
async fn shard_batch(
    State(shared): State<Arc<Shared>>,
    Path(ids): Path<String>,
    permits: Arc<Semaphore>,
) -> Response {
    let ids = match parse_batch_path(&ids) {
        Ok(ids) => ids,
        Err(e) => {
            shared.metrics.request(Protocol::HttpShard, Outcome::Refused);
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let Ok(permit) = permits.acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let serving = Arc::clone(&shared);
    let request = Ok(ShardRequest::Get(ids));
    // A read needs no sender: the relay's own id stands in for one.
    let served = tokio::task::spawn_blocking(move || {
        crate::node::serve_shards(&serving, &serving.peer_id, request, Protocol::HttpShard)
    });
    let (reply, budget) = match served.await {
        Ok(served) => served,
        Err(e) => {
            tracing::error!(error = %e, "shard batch read stopped");
            shared.metrics.request(Protocol::HttpShard, Outcome::Error);
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read shards\n").into_response();
        }
    };
    let complete = matches!(&reply, ShardResponse::Get(statuses)
        if statuses.iter().all(|s| matches!(s, ShardStatus::Found(_))));
    let pieces = reply.frame().into_pieces();
    let length: usize = pieces.iter().map(bytes::Bytes::len).sum();
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (header::CONTENT_LENGTH, &length.to_string()),
        // Shards never change, but a shard missing now may be held later.
        (
            header::CACHE_CONTROL,
            if complete { "public, max-age=31536000, immutable" } else { "no-store" },
        ),
    ];
    // The read permit and the reply budget go when the reply is sent or dropped.
    (headers, held(pieces, (permit, budget))).into_response()
}

/// A reply's body that holds `guard` (its read permit, and its part of the reply budget) until
/// it is sent or dropped: replies waiting for slow readers count against
/// [`Config::max_concurrent_streams`](crate::config::Config) as reads do, and against the
/// reply budget. A reader that stops altogether is cut off after the request timeout (see
/// [`serve`]).
fn held(pieces: Vec<bytes::Bytes>, guard: impl Send + Sync + 'static) -> Body {
    Body::from_stream(futures::stream::iter(pieces).map(move |piece| {
        let _held = &guard;
        Ok::<_, std::convert::Infallible>(piece)
    }))
}

/// Serves [`router`] on `listener` until `stop` completes, then lets the requests under way
/// finish. At most `max-http-connections` are served at once; a connection whose request's
/// headers take longer than [`server::IDLE`] or the request timeout if shorter (or that sits
/// idle that long between requests), or whose peer takes no reply bytes for the request
/// timeout, is closed, with what its reply held (see [`server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = server::Limits {
        connections: shared.config.max_http_connections,
        headers: shared.config.request_timeout().min(server::IDLE),
        stall: shared.config.request_timeout(),
    };
    server::serve(listener, router(shared), limits, stop).await
}

/// MiB of put bodies over HTTP that may be in the relay's memory at once.
pub const PUT_BUDGET_MIB: usize = 256;

/// Shards put over HTTP by a signed request (see [`shardweb_core::protocol::http_put`]): the
/// same put as over libp2p, charged to the signer's peer id, answered with the same put reply
/// and a receipt signed with the relay's identity key. The signature's time and the declared
/// length are checked before the body is read; the body is read within the request timeout,
/// holding its length of [`PUT_BUDGET_MIB`], for which it waits at most that timeout too.
async fn put_shards(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
    budget: Arc<Semaphore>,
) -> Response {
    let refuse = |status: StatusCode, why: String| {
        shared.metrics.request(Protocol::HttpShard, Outcome::Refused);
        tracing::debug!(%status, %why, "shard put over HTTP refused");
        (status, format!("{why}\n")).into_response()
    };
    let auth = match PutAuth::from_headers(|name| headers.get(name)?.to_str().ok()) {
        Ok(auth) => auth,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(e) = auth.check_time(now) {
        return refuse(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let declared: Option<usize> =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let Some(declared) = declared else {
        return refuse(StatusCode::LENGTH_REQUIRED, "a put declares its length".into());
    };
    if declared > MAX_FRAME_BYTES {
        let why = format!("a put is at most {MAX_FRAME_BYTES} bytes");
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, why);
    }
    let mib = u32::try_from(declared.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
    let wait = shared.config.request_timeout();
    let _reserved = match tokio::time::timeout(wait, budget.acquire_many_owned(mib)).await {
        Ok(Ok(reserved)) => reserved,
        Ok(Err(_)) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
        Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many puts at once".into()),
    };
    let read = read_body(body, declared);
    let body = match tokio::time::timeout(shared.config.request_timeout(), read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            let why = format!("the body was cut short or is over {MAX_FRAME_BYTES} bytes");
            return refuse(StatusCode::BAD_REQUEST, why);
        }
        Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "the body came too slowly".into()),
    };
    let shards = match ShardRequest::decode(body) {
        Ok(ShardRequest::Put(shards)) => shards,
        Ok(_) => return refuse(StatusCode::BAD_REQUEST, "the body is not a put request".into()),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("malformed put request: {e}")),
    };
    let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
    let sender = match auth.verify(&shared.peer_id, &ids) {
        Ok(sender) => sender,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let serving = Arc::clone(&shared);
    let request = Ok(ShardRequest::Put(shards));
    let served = tokio::task::spawn_blocking(move || {
        crate::node::serve_shards(&serving, &sender, request, Protocol::HttpShard)
    });
    // A put's reply holds no shards, nor any of the reply budget.
    let signed = served.await.map_err(|e| e.to_string()).and_then(|(reply, _)| {
        let body = reply.encode();
        let receipt = shared.key.sign(&auth.receipt_message(&body)).map_err(|e| e.to_string())?;
        Ok((body, PutAuth::receipt_header(&receipt)))
    });
    match signed {
        Ok((body, receipt)) => {
            let headers = [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (HeaderName::from_static(RECEIPT_HEADER), receipt),
                // A page of another origin reads the receipt only if told it may.
                (header::ACCESS_CONTROL_EXPOSE_HEADERS, RECEIPT_HEADER.to_owned()),
            ];
            (headers, body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "shard put stopped");
            shared.metrics.request(Protocol::HttpShard, Outcome::Error);
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot store shards\n").into_response()
        }
    }
}

/// Reads a put's body of at most [`MAX_FRAME_BYTES`] into one buffer of the `declared` length,
/// copying each chunk once as it comes (collecting the chunks and joining them would hold
/// the body twice).
async fn read_body(body: Body, declared: usize) -> Result<bytes::Bytes, ()> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    // Capacity not yet written is not yet memory: a body that never comes costs nothing.
    let mut buf = bytes::BytesMut::with_capacity(declared.min(MAX_FRAME_BYTES));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(drop)?;
        if buf.len() + chunk.len() > MAX_FRAME_BYTES {
            return Err(());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// What a browser asks before a put from a page of another origin: the method and headers
/// the put uses are allowed from anywhere (the signature, not the origin, says who puts).
async fn put_preflight() -> Response {
    let headers = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "POST".to_owned()),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            format!("content-type, {KEY_HEADER}, {TIME_HEADER}, {SIGNATURE_HEADER}"),
        ),
        (header::ACCESS_CONTROL_MAX_AGE, "7200".to_owned()),
    ];
    (StatusCode::NO_CONTENT, headers).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "peers": shared.metrics.peers.load(std::sync::atomic::Ordering::Relaxed),
        "shards": shared.store.shard_count(),
        "bytes_stored": shared.store.used_bytes(),
    });
    Json(body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.metrics.render(&shared.store);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A status page, until the web page is served here.
async fn page(State(shared): State<Arc<Shared>>) -> Html<String> {
    let info = info_of(&shared);
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let addrs: String =
        info.addrs.iter().map(|a| format!("<li><code>{}</code></li>", escape(a))).collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>shardweb relay</title></head><body><main>\
         <h1>shardweb relay</h1><p>Version {}. Peer id <code>{}</code>.</p>\
         <p>{} shards, {} bytes stored; {} peers connected.</p>\
         <h2>Addresses</h2><ul>{addrs}</ul>\
         <p>API: <a href=\"/api/info\">/api/info</a>, <a href=\"/api/health\">/api/health</a>, \
         <a href=\"/metrics\">/metrics</a>.</p></main></body></html>",
        escape(&info.version),
        escape(&info.peer_id),
        shared.store.shard_count(),
        shared.store.used_bytes(),
        shared.metrics.peers.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use shardweb_core::protocol::{PutOutcome, ShardResponse};

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::store::{DiskStore, Limits};

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        shared_with(dir, 5000, 1000)
    }

    fn shared_with(dir: &std::path::Path, max: u64, per_peer: u64) -> Arc<Shared> {
        let config =
            Config { max_storage: max, max_storage_per_peer: per_peer, ..Config::default() };
        shared_configured(dir, config)
    }

    fn shared_configured(dir: &std::path::Path, config: Config) -> Arc<Shared> {
        let limits = Limits {
            max_bytes: config.max_storage,
            max_bytes_per_peer: config.max_storage_per_peer,
        };
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let addr: libp2p::Multiaddr =
            format!("/ip4/127.0.0.1/tcp/1/p2p/{peer_id}").parse().unwrap();
        Arc::new(Shared {
            key,
            peer_id,
            addrs: RwLock::new(vec![addr]),
            store: Arc::new(DiskStore::open(dir, limits).unwrap()),
            metrics: Metrics::default(),
            replies: crate::node::ReplyBudget::new(config.max_reply_mib),
            config,
        })
    }

    async fn get_bytes(shared: &Arc<Shared>, uri: &str) -> (StatusCode, Vec<u8>) {
        get_bytes_up_to(shared, uri, 1 << 20).await
    }

    async fn get_bytes_up_to(shared: &Arc<Shared>, uri: &str, max: usize) -> (StatusCode, Vec<u8>) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = router(Arc::clone(shared)).oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), max).await.unwrap();
        (status, body.to_vec())
    }

    /// Stores `shards` (owned by one peer); their ids, in order.
    fn store_all(shared: &Shared, shards: &[Vec<u8>]) -> Vec<ShardId> {
        let ids: Vec<ShardId> = shards.iter().map(|s| ShardId::of(s)).collect();
        for (id, bytes) in ids.iter().zip(shards) {
            shared.store.put_shard(b"owner", id, bytes).unwrap();
        }
        ids
    }

    /// The batch route's URI for `ids`.
    fn batch_uri(ids: &[ShardId]) -> String {
        format!("{SHARD_BATCH_HTTP_PATH}{}", shardweb_core::protocol::batch_path(ids))
    }

    /// Asserts that `/metrics` has each of `lines`.
    async fn assert_metrics(shared: &Arc<Shared>, lines: &[&str]) {
        let (_, metrics) = get(shared, "/metrics").await;
        for line in lines {
            assert!(metrics.contains(line), "{line} in {metrics}");
        }
    }

    async fn get(shared: &Arc<Shared>, uri: &str) -> (StatusCode, String) {
        let (status, body) = get_bytes(shared, uri).await;
        (status, String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn shards_are_served_by_id_and_only_when_intact() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (a, b) = (b"shard a".to_vec(), b"shard b".to_vec());
        let (id_a, id_b) = (ShardId::of(&a), ShardId::of(&b));
        shared.store.put_shard(b"owner", &id_a, &a).unwrap();
        shared.store.put_shard(b"owner", &id_b, &b).unwrap();
        let request = Request::builder().uri(format!("/api/shards/{id_a}")).body(Body::empty());
        let response = router(Arc::clone(&shared)).oneshot(request.unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(response.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        assert_eq!(to_bytes(response.into_body(), 1 << 20).await.unwrap(), a);

        // Not held; not an id; an id in capitals: nothing is served.
        let missing = ShardId::of(b"never stored");
        assert_eq!(get(&shared, &format!("/api/shards/{missing}")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&shared, "/api/shards/nope").await.0, StatusCode::BAD_REQUEST);
        let upper = id_a.to_string().to_uppercase();
        assert_eq!(get(&shared, &format!("/api/shards/{upper}")).await.0, StatusCode::BAD_REQUEST);

        // A shard whose file no longer hashes to its id is not served, and is removed.
        let path = std::fs::read_dir(dir.path().join("shards"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().contains(&id_b.to_string()))
            .expect("the shard's file");
        std::fs::write(&path, b"shard B").unwrap();
        assert_eq!(get(&shared, &format!("/api/shards/{id_b}")).await.0, StatusCode::NOT_FOUND);
        assert!(!shared.store.has_shard(&id_b).unwrap());
        assert_eq!(get_bytes(&shared, &format!("/api/shards/{id_a}")).await, (StatusCode::OK, a));

        assert_metrics(
            &shared,
            &[
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"ok\"} 4",
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"refused\"} 2",
                "shardweb_corrupt_shards_removed_total 1",
            ],
        )
        .await;
    }

    /// A batch answers one status per id in order, as a get over libp2p does, with its
    /// length declared; it is cached for good only when every shard was found.
    #[tokio::test]
    async fn batches_of_shards_come_in_one_get_reply() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (a, b) = (b"shard a".to_vec(), b"shard b".to_vec());
        let (id_a, id_b) = (ShardId::of(&a), ShardId::of(&b));
        shared.store.put_shard(b"owner", &id_a, &a).unwrap();
        shared.store.put_shard(b"owner", &id_b, &b).unwrap();
        let missing = ShardId::of(b"never stored");
        let ask = |ids: &[ShardId]| {
            router(Arc::clone(&shared))
                .oneshot(Request::builder().uri(batch_uri(ids)).body(Body::empty()).unwrap())
        };
        let response = ask(&[id_b, missing, id_a]).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let declared: usize =
            response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert_eq!(body.len(), declared);
        let statuses = vec![
            ShardStatus::Found(b.clone().into()),
            ShardStatus::Missing,
            ShardStatus::Found(a.clone().into()),
        ];
        assert_eq!(ShardResponse::decode(body).unwrap(), ShardResponse::Get(statuses));

        let response = ask(&[id_a]).await.unwrap();
        assert!(response.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let found = ShardResponse::Get(vec![ShardStatus::Found(a.into())]);
        assert_eq!(ShardResponse::decode(body).unwrap(), found);

        // Not ids; too many ids: refused, and nothing is read.
        let too_many = vec![id_a; shardweb_core::protocol::MAX_HTTP_BATCH + 1];
        let too_many = shardweb_core::protocol::batch_path(&too_many);
        for bad in [format!("{id_a},nope"), format!("{id_a},"), too_many] {
            let (status, _) = get(&shared, &format!("{SHARD_BATCH_HTTP_PATH}{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_metrics(
            &shared,
            &[
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"ok\"} 2",
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"refused\"} 3",
            ],
        )
        .await;
    }

    /// A batch answers at most one frame of shards: once one does not fit, it and every one
    /// after it are deferred without being read, even one that would fit.
    #[tokio::test]
    async fn a_batch_past_one_frame_defers_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_with(dir.path(), 64 << 20, 64 << 20);
        let shards: Vec<Vec<u8>> =
            (0..3u8).map(|i| vec![i; 12 << 20]).chain(std::iter::once(b"small".to_vec())).collect();
        let ids = store_all(&shared, &shards);
        let (status, body) = get_bytes_up_to(&shared, &batch_uri(&ids), MAX_FRAME_BYTES).await;
        assert_eq!(status, StatusCode::OK);
        let statuses = vec![
            ShardStatus::Found(shards[0].clone().into()),
            ShardStatus::Found(shards[1].clone().into()),
            ShardStatus::Deferred,
            ShardStatus::Deferred,
        ];
        assert!(ShardResponse::decode(body.into()).unwrap() == ShardResponse::Get(statuses));
        assert_metrics(&shared, &[&format!("shardweb_bytes_out_total {}", 24 << 20)]).await;
    }

    /// A shard being sent holds its read permit: with one permit, a second read waits until
    /// the first reply is sent or dropped, not only until its bytes were read from disk.
    #[tokio::test]
    async fn a_reply_holds_its_read_permit_until_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { max_concurrent_streams: 1, ..Config::default() };
        let shared = shared_configured(dir.path(), config);
        let shard = b"one shard".to_vec();
        let id = ShardId::of(&shard);
        shared.store.put_shard(b"owner", &id, &shard).unwrap();
        let app = router(Arc::clone(&shared));
        let uri = format!("{SHARD_HTTP_PATH}{id}");
        let request = || Request::builder().uri(&uri).body(Body::empty()).unwrap();

        let first = app.clone().oneshot(request()).await.unwrap();
        let second = tokio::spawn(app.clone().oneshot(request()));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "a second read ran while a reply held the only permit");
        let body = to_bytes(first.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&body[..], &shard[..]);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .expect("the second read runs once the first reply is sent")
            .unwrap()
            .unwrap();
        assert_eq!(to_bytes(second.into_body(), 1 << 20).await.unwrap(), body);
    }

    /// Replies hold their shards' length of the relay's reply budget until they are sent: past
    /// it, a batch's shards are deferred and a single shard waits (then is refused, busy); once
    /// a reply goes, its part serves the next.
    #[tokio::test]
    async fn replies_waiting_to_be_read_hold_the_reply_budget() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            max_storage: 64 << 20,
            max_storage_per_peer: 64 << 20,
            max_reply_mib: 32,
            request_timeout_secs: 1,
            ..Config::default()
        };
        let shared = shared_configured(dir.path(), config);
        let shards: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 12 << 20]).collect();
        let ids = store_all(&shared, &shards);
        let app = router(Arc::clone(&shared));
        let batch =
            |ids: &[ShardId]| Request::builder().uri(batch_uri(ids)).body(Body::empty()).unwrap();
        let statuses = |body: bytes::Bytes| match ShardResponse::decode(body).unwrap() {
            ShardResponse::Get(statuses) => statuses,
            other => panic!("not a get reply: {other:?}"),
        };

        // 24 of the 32 MiB held by a reply nobody reads yet.
        let first = app.clone().oneshot(batch(&ids[..2])).await.unwrap();
        assert_eq!(shared.replies.available(), 8 << 20);
        let second = app.clone().oneshot(batch(&ids[2..])).await.unwrap();
        let body = to_bytes(second.into_body(), MAX_FRAME_BYTES).await.unwrap();
        assert!(statuses(body) == [ShardStatus::Deferred]);
        let single = format!("{SHARD_HTTP_PATH}{}", ids[2]);
        let (status, _) = get_bytes(&shared, &single).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        let body = to_bytes(first.into_body(), MAX_FRAME_BYTES).await.unwrap();
        assert!(
            statuses(body)
                == [
                    ShardStatus::Found(shards[0].clone().into()),
                    ShardStatus::Found(shards[1].clone().into())
                ]
        );
        assert_eq!(shared.replies.available(), 32 << 20);
        let third = app.clone().oneshot(batch(&ids[2..])).await.unwrap();
        let body = to_bytes(third.into_body(), MAX_FRAME_BYTES).await.unwrap();
        assert!(statuses(body) == [ShardStatus::Found(shards[2].clone().into())]);
        let (status, body) = get_bytes_up_to(&shared, &single, MAX_FRAME_BYTES).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 12 << 20));
        assert_eq!(shared.replies.available(), 32 << 20);
    }

    /// A client that asks for a shard and reads nothing is cut off after the request timeout:
    /// its reply ends short, and the read permit it held serves the next client.
    #[tokio::test]
    async fn a_reader_that_stops_is_cut_off_and_its_permit_serves_the_next() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            max_storage: 64 << 20,
            max_storage_per_peer: 64 << 20,
            request_timeout_secs: 1,
            max_concurrent_streams: 1,
            ..Config::default()
        };
        let shared = shared_configured(dir.path(), config);
        // Larger than loopback's socket buffers take from a peer that does not read.
        let big = vec![5u8; MAX_SHARD_BYTES];
        let small = b"small".to_vec();
        store_all(&shared, &[big.clone(), small.clone()]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&shared), async move {
            let _ = stopped.await;
        }));
        let ask = |id: ShardId| async move {
            // A small receive buffer, so that the reply cannot fit in the sockets' buffers
            // whatever this host's defaults.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(16 << 10).unwrap();
            let mut tcp = socket.connect(addr).await.unwrap();
            let request = format!(
                "GET {SHARD_HTTP_PATH}{id} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.unwrap();
            tcp
        };

        let mut stalled = ask(ShardId::of(&big)).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut next = ask(ShardId::of(&small)).await;
        let mut reply = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), next.read_to_end(&mut reply))
            .await
            .expect("the next client is served once the stalled one is cut off")
            .unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
        assert!(reply.ends_with(&small));
        let head = String::from_utf8_lossy(&reply).to_lowercase();
        assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");

        let mut cut = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), stalled.read_to_end(&mut cut))
                .await
                .expect("the stalled connection is closed");
        assert!(cut.starts_with(b"HTTP/1.1 200"));
        assert!(cut.len() < big.len(), "the stalled reply was sent whole: {}", cut.len());

        // Nothing is left holding the server: it stops at once.
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    /// A `POST /api/shards` of `body` with `headers` and its length: the status, and the put
    /// reply if any, whose receipt must be the relay's.
    async fn post(
        shared: &Arc<Shared>,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Option<ShardResponse>) {
        let length = body.len().to_string();
        let declared = headers.iter().any(|(name, _)| *name == "content-length");
        let length = (!declared).then_some(("content-length", length));
        post_as_is(shared, &[headers, length.as_slice()].concat(), body).await
    }

    /// The same without a declared length, unless `headers` declare one.
    async fn post_as_is(
        shared: &Arc<Shared>,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Option<ShardResponse>) {
        let mut request = Request::builder().method("POST").uri(SHARD_PUT_HTTP_PATH);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = router(Arc::clone(shared)).oneshot(request.body(Body::from(body)).unwrap());
        let response = response.await.unwrap();
        let status = response.status();
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let receipt =
            response.headers().get(RECEIPT_HEADER).map(|v| v.to_str().unwrap().to_owned());
        if status == StatusCode::OK {
            let exposed = &response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS];
            assert_eq!(exposed, RECEIPT_HEADER);
        }
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        if status != StatusCode::OK {
            return (status, None);
        }
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        let auth = PutAuth::from_headers(header).unwrap();
        auth.check_receipt(&shared.peer_id, &body, receipt.as_deref())
            .expect("the relay's receipt");
        let other = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        assert!(auth.check_receipt(&other, &body, receipt.as_deref()).is_err());
        (status, Some(ShardResponse::decode(body).unwrap()))
    }

    #[tokio::test]
    async fn signed_puts_are_stored_and_charged_to_their_signer() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let sender = libp2p::identity::Keypair::ed25519_from_bytes([3; 32]).unwrap();
        let key = shardweb_core::manifest::SigningKey::from_bytes(&[3; 32]);
        let shards: Vec<(ShardId, bytes::Bytes)> = [&b"shard a"[..], b"shard b"]
            .map(|b| (ShardId::of(b), bytes::Bytes::from_static(b)))
            .into();
        let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
        let body = ShardRequest::Put(shards.clone()).encode();
        let signed = PutAuth::sign(&key, &shared.peer_id, now(), &ids).headers();

        let stored = ShardResponse::Put(vec![PutOutcome::Stored; 2]);
        assert_eq!(post(&shared, &signed, body.clone()).await, (StatusCode::OK, Some(stored)));
        let held = ShardResponse::Put(vec![PutOutcome::AlreadyHeld; 2]);
        assert_eq!(post(&shared, &signed, body.clone()).await, (StatusCode::OK, Some(held)));
        assert_eq!(shared.store.get_shard(&ids[1]).unwrap().unwrap(), shards[1].1);
        assert_eq!(shared.store.usage(&sender.public().to_peer_id().to_bytes()).unwrap(), 14);

        // Over the sender's quota (1000 bytes here), or not the bytes of their id: refused
        // shard by shard, as over libp2p, and nothing is left behind.
        let big = bytes::Bytes::from(vec![7; 1200]);
        let wrong = (ShardId::of(b"other"), bytes::Bytes::from_static(b"bytes"));
        let put = vec![(ShardId::of(&big), big), wrong];
        let ids: Vec<ShardId> = put.iter().map(|(id, _)| *id).collect();
        let signed_big = PutAuth::sign(&key, &shared.peer_id, now(), &ids).headers();
        let refused = ShardResponse::Put(vec![PutOutcome::NoSpace, PutOutcome::Mismatch]);
        let reply = post(&shared, &signed_big, ShardRequest::Put(put).encode()).await;
        assert_eq!(reply, (StatusCode::OK, Some(refused)));
        assert!(!ids.iter().any(|id| shared.store.has_shard(id).unwrap()));

        // Unsigned, stale, signed for another relay or other shards, not a put, malformed,
        // too large: refused whole, before anything is stored.
        let other_relay = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        let others = [ShardId::of(b"x")];
        let fresh_ids = vec![ShardId::of(b"c"), ShardId::of(b"d")];
        let unauthorized = (StatusCode::UNAUTHORIZED, None);
        for headers in [
            signed[..2].to_vec(),
            PutAuth::sign(&key, &shared.peer_id, now() - 3600, &ids).headers().to_vec(),
            PutAuth::sign(&key, &other_relay, now(), &fresh_ids).headers().to_vec(),
            PutAuth::sign(&key, &shared.peer_id, now(), &others).headers().to_vec(),
        ] {
            let put: Vec<_> = fresh_ids.iter().map(|id| (*id, bytes::Bytes::new())).collect();
            assert_eq!(
                post(&shared, &headers, ShardRequest::Put(put).encode()).await,
                unauthorized
            );
        }
        let not_a_put = ShardRequest::Get(ids.clone()).encode();
        let bad = (StatusCode::BAD_REQUEST, None);
        assert_eq!(post(&shared, &signed, not_a_put).await, bad);
        assert_eq!(post(&shared, &signed, b"\x01\xff".to_vec()).await, bad);
        let mut too_long = signed.to_vec();
        too_long.push(("content-length", (MAX_FRAME_BYTES + 1).to_string()));
        assert_eq!(post(&shared, &too_long, Vec::new()).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        let unsized_put = post_as_is(&shared, &signed, body.clone()).await;
        assert_eq!(unsized_put, (StatusCode::LENGTH_REQUIRED, None));
        assert_eq!(shared.store.shard_count(), 2);

        assert_metrics(
            &shared,
            &[
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"ok\"} 3",
                "shardweb_requests_total{protocol=\"http_shard\",outcome=\"refused\"} 8",
            ],
        )
        .await;
    }

    /// A page of another origin may put: the browser's preflight is answered.
    #[tokio::test]
    async fn puts_from_other_origins_pass_the_preflight() {
        let dir = tempfile::tempdir().unwrap();
        let request = Request::builder()
            .method("OPTIONS")
            .uri(SHARD_PUT_HTTP_PATH)
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap();
        let response = router(shared(dir.path())).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let allowed = |name| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(allowed(header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        assert_eq!(allowed(header::ACCESS_CONTROL_ALLOW_METHODS), "POST");
        for name in [KEY_HEADER, TIME_HEADER, SIGNATURE_HEADER, "content-type"] {
            assert!(allowed(header::ACCESS_CONTROL_ALLOW_HEADERS).contains(name), "{name}");
        }
    }

    #[tokio::test]
    async fn api_info_tells_a_client_how_to_dial() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (status, body) = get(&shared, "/api/info").await;
        assert_eq!(status, StatusCode::OK);
        let info: Info = serde_json::from_str(&body).unwrap();
        assert_eq!(info.peer_id, shared.peer_id.to_string());
        assert!(info.addrs[0].ends_with(&format!("/p2p/{}", shared.peer_id)));
        assert_eq!(info.protocols, ["/shardweb/shard/1", "/shardweb/manifest/1"]);
        assert_eq!(info.limits.max_storage_per_peer, 1000);
        assert_eq!(info.shard_http_path.as_deref(), Some("/api/shards/"));
        assert_eq!(info.shard_put_http_path.as_deref(), Some("/api/shards"));
        assert_eq!(info.shard_batch_http_path.as_deref(), Some("/api/shard-batch/"));
    }

    #[tokio::test]
    async fn health_metrics_page_and_unknown_paths() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (status, body) = get(&shared, "/api/health").await;
        assert_eq!((status, body.contains("\"status\":\"ok\"")), (StatusCode::OK, true));
        let (status, body) = get(&shared, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("shardweb_shards_stored 0\n"), "{body}");
        assert!(body.contains("shardweb_requests_total{protocol=\"shard\",outcome=\"ok\"} 0"));
        let (status, body) = get(&shared, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(&shared.peer_id.to_string()));
        let (status, _) = get(&shared, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

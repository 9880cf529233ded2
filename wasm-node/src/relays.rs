//! Relays, from the browser's side: reading a relay's `/api/info`, building the swarm with the
//! transports a browser has, dialling, and reserving a circuit slot so that other peers can
//! reach this browser.

use std::time::Duration;

use futures::future::{Either, select};
use js_sys::{Function, Promise, Reflect};
use libp2p::core::transport::{OptionalTransport, Transport as _, upgrade};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Swarm, noise, webrtc_websys};
use shardweb_core::node::{mux, peer};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::{NodeError, describe};

/// How long a relay has to answer `/api/info`.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/api/info` answer read.
const MAX_INFO_BYTES: usize = 64 << 10;

/// What a browser needs of a relay's `/api/info`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Info {
    /// The relay's peer id.
    pub peer_id: String,
    /// Its dialable addresses, each with `/p2p/<peer id>`.
    pub addrs: Vec<String>,
    /// The HTTP path it serves shards under, if it does.
    #[serde(default)]
    pub shard_http_path: Option<String>,
    /// The HTTP path it takes signed shard puts at, if it does.
    #[serde(default)]
    pub shard_put_http_path: Option<String>,
    /// The HTTP path it serves several shards at once under, if it does.
    #[serde(default)]
    pub shard_batch_http_path: Option<String>,
}

/// A relay the node knows.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Its HTTP URL, as given.
    pub url: String,
    /// Its peer id.
    pub peer: PeerId,
    /// The address dialled.
    pub addr: Multiaddr,
    /// The circuit address others reach this browser at, once reserved.
    pub circuit: Option<Multiaddr>,
    /// Whether a connection is open now.
    pub connected: bool,
}

/// Whether this global scope has WebRTC: a window does; Chromium's workers do not.
pub fn has_webrtc() -> bool {
    Reflect::has(&js_sys::global(), &"RTCPeerConnection".into()).unwrap_or(false)
        && web_sys::window().is_some()
}

/// The swarm of a browser node: WebSocket always, WebRTC-direct where the scope has WebRTC,
/// and circuits through relays.
pub fn swarm(key: Keypair, config: &peer::Config) -> Result<Swarm<peer::Behaviour>, NodeError> {
    let webrtc = has_webrtc();
    let failed =
        |e: &dyn std::fmt::Display| NodeError::Unsupported { what: format!("libp2p: {e}") };
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            Ok(crate::websocket::Transport
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(mux::config())
                .boxed())
        })
        .map_err(|e| failed(&e))?
        .with_other_transport(|key| {
            if webrtc {
                let transport = webrtc_websys::Transport::new(webrtc_websys::Config::new(key));
                OptionalTransport::some(transport.boxed())
            } else {
                OptionalTransport::none()
            }
        })
        .map_err(|e| failed(&e))?
        .with_relay_client(noise::Config::new, mux::config)
        .map_err(|e| failed(&e))?
        .with_behaviour(|key, relay| peer::Behaviour::new(key, relay, config))
        .map_err(|e| failed(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build())
}

/// This scope's global object and its `fetch` (a window's or a worker's), if it has one.
pub(crate) fn fetch() -> Option<(js_sys::Object, Function)> {
    let global = js_sys::global();
    let fetch = Reflect::get(&global, &"fetch".into()).ok()?.dyn_into::<Function>().ok()?;
    Some((global, fetch))
}

/// Fetches and parses a relay's `/api/info`.
pub async fn info(url: &str) -> Result<Info, NodeError> {
    let unreachable = |detail: String| NodeError::NoRelays { detail: format!("{url}: {detail}") };
    let base = url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(NodeError::invalid(format!(
            "relay URL {url} must start with http:// or https://"
        )));
    }
    let (global, fetch) = fetch().ok_or_else(|| NodeError::Unsupported { what: "fetch".into() })?;
    let request = async {
        let promise = fetch
            .call1(&global, &JsValue::from(format!("{base}/api/info")))
            .map_err(|e| describe(&e))?
            .unchecked_into::<Promise>();
        let response: web_sys::Response =
            JsFuture::from(promise).await.map_err(|e| describe(&e))?.unchecked_into();
        if !response.ok() {
            return Err(format!("/api/info answered {}", response.status()));
        }
        // Counted as it arrives: a relay that sends more is cut off at the limit.
        let body = crate::http_shards::read_body(&response, "/api/info", MAX_INFO_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not text".to_owned())
    };
    let timeout = futures_timer::Delay::new(INFO_TIMEOUT);
    let text = match select(Box::pin(request), timeout).await {
        Either::Left((result, _)) => result.map_err(unreachable)?,
        Either::Right(_) => return Err(unreachable("no answer in time".into())),
    };
    serde_json::from_str(&text).map_err(|e| unreachable(format!("/api/info is malformed: {e}")))
}

/// The addresses of `info` a browser can dial, best first: those on the host of the relay's
/// URL `url` (the one the browser reached it at), then the rest; WebSocket before
/// WebRTC-direct (only where this scope has WebRTC). At most [`MAX_DIALED_ADDRS`]. Each ends
/// with `/p2p/<relay>`.
pub fn browser_addrs(info: &Info, peer: PeerId, url: &str) -> Vec<Multiaddr> {
    let webrtc = has_webrtc();
    let mut ws = Vec::new();
    let mut rtc = Vec::new();
    for addr in info.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
        let protocols: Vec<Protocol> = addr.iter().collect();
        let is_ws = protocols.iter().any(|p| matches!(p, Protocol::Ws(_)));
        let is_rtc = protocols.iter().any(|p| matches!(p, Protocol::WebRTCDirect));
        let circuit = protocols.iter().any(|p| matches!(p, Protocol::P2pCircuit));
        if circuit {
            continue;
        }
        let addr = if protocols.iter().any(|p| matches!(p, Protocol::P2p(_))) {
            addr
        } else {
            addr.with(Protocol::P2p(peer))
        };
        if is_ws {
            ws.push(addr);
        } else if is_rtc && webrtc {
            rtc.push(addr);
        }
    }
    ws.extend(rtc);
    // A relay bound to every interface lists one address per interface: the one the page
    // reached it at goes first (a stable sort keeps the order within each group).
    let host = web_sys::Url::new(url).ok().map(|u| u.hostname());
    let host = host.as_deref().map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    ws.sort_by_key(|addr| !host.is_some_and(|host| on_host(addr, host)));
    ws.truncate(MAX_DIALED_ADDRS);
    ws
}

/// Whether `addr` names `host` (a DNS name or an IP address).
fn on_host(addr: &Multiaddr, host: &str) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => name == host,
        Protocol::Ip4(ip) => ip.to_string() == host,
        Protocol::Ip6(ip) => ip.to_string() == host,
        _ => false,
    })
}

/// The most addresses of one relay dialled, one after another: a relay that lists more
/// cannot hold a start up for longer than these take to fail.
const MAX_DIALED_ADDRS: usize = 4;

#[cfg(all(test, wasm_browser))]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    /// A relay listing an address per interface is dialled first where the page reached it,
    /// and at most [`MAX_DIALED_ADDRS`] of its addresses are.
    #[wasm_bindgen_test]
    fn the_address_the_page_reached_goes_first() {
        let peer = PeerId::random();
        let addrs = (1..=6).map(|i| format!("/ip4/10.0.0.{i}/tcp/8080/ws")).collect();
        let info = Info {
            peer_id: peer.to_string(),
            addrs,
            shard_http_path: None,
            shard_put_http_path: None,
            shard_batch_http_path: None,
        };
        let dialled = browser_addrs(&info, peer, "http://10.0.0.6:8080/");
        assert_eq!(dialled.len(), MAX_DIALED_ADDRS);
        assert_eq!(dialled[0], format!("/ip4/10.0.0.6/tcp/8080/ws/p2p/{peer}").parse().unwrap());
        assert_eq!(dialled[1], format!("/ip4/10.0.0.1/tcp/8080/ws/p2p/{peer}").parse().unwrap());
        let dns = browser_addrs(&info, peer, "https://relay.example/");
        assert_eq!(dns[0], format!("/ip4/10.0.0.1/tcp/8080/ws/p2p/{peer}").parse().unwrap());
    }
}

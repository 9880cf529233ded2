//! What the node reports about itself: peers, relays, its store and its memory.

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::NodeError;
use crate::node::Node;

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

fn number(n: u64) -> JsValue {
    JsValue::from(n as f64)
}

/// Reads `path` (dot-separated) from the global scope.
fn global_path(path: &str) -> JsValue {
    path.split('.').fold(js_sys::global().into(), |v: JsValue, k| {
        if v.is_object() {
            Reflect::get(&v, &k.into()).unwrap_or(JsValue::UNDEFINED)
        } else {
            JsValue::UNDEFINED
        }
    })
}

/// Connected peers: `[{ peerId, address, relay, url? }]`.
pub async fn peers(node: &Node) -> Result<JsValue, NodeError> {
    let connected = node.peer.connected().await?;
    let relays = node.relays();
    let list = Array::new();
    for (peer, addr) in connected {
        let relay = relays.iter().find(|r| r.peer == peer);
        list.push(&object(&[
            ("peerId", peer.to_string().into()),
            ("address", addr.to_string().into()),
            ("relay", relay.is_some().into()),
            ("url", relay.map_or(JsValue::UNDEFINED, |r| r.url.clone().into())),
        ]));
    }
    Ok(list.into())
}

/// `navigator.storage.estimate()` where the browser has it: `{ usage, quota }`.
async fn estimate() -> JsValue {
    let storage = global_path("navigator.storage");
    let Some(estimate) =
        Reflect::get(&storage, &"estimate".into()).ok().and_then(|f| f.dyn_into::<Function>().ok())
    else {
        return JsValue::UNDEFINED;
    };
    match estimate.call0(&storage).map(|p| p.unchecked_into::<Promise>()) {
        Ok(p) => JsFuture::from(p).await.unwrap_or(JsValue::UNDEFINED),
        Err(_) => JsValue::UNDEFINED,
    }
}

/// Bytes of wasm linear memory, and of the JavaScript heap where the browser says.
pub fn memory() -> (u64, Option<u64>) {
    let buffer =
        Reflect::get(&wasm_bindgen::memory(), &"buffer".into()).unwrap_or(JsValue::UNDEFINED);
    let wasm =
        Reflect::get(&buffer, &"byteLength".into()).ok().and_then(|b| b.as_f64()).unwrap_or(0.0);
    let heap = global_path("performance.memory.usedJSHeapSize").as_f64();
    (wasm as u64, heap.map(|h| h as u64))
}

/// The node's stats.
pub async fn stats(node: &Node) -> Result<JsValue, NodeError> {
    let (bytes, shards) = node.store.usage().await?;
    let connected = node.peer.connected().await.map(|c| c.len()).unwrap_or(0);
    let relays = Array::new();
    for r in node.relays() {
        relays.push(&object(&[
            ("url", r.url.clone().into()),
            ("peerId", r.peer.to_string().into()),
            ("address", r.addr.to_string().into()),
            ("connected", r.connected.into()),
            ("reachableAt", r.circuit.map_or(JsValue::NULL, |c| c.to_string().into())),
        ]));
    }
    let estimate = estimate().await;
    let (wasm, heap) = memory();
    let counters = &node.counters;
    Ok(object(&[
        ("peerId", node.peer_id().to_string().into()),
        ("relays", relays.into()),
        ("peers", number(connected as u64)),
        (
            "store",
            object(&[
                ("name", node.store.name().into()),
                ("shards", number(shards)),
                ("bytes", number(bytes)),
                ("maxBytes", node.store.max_bytes().map_or(JsValue::NULL, number)),
                ("usage", Reflect::get(&estimate, &"usage".into()).unwrap_or(JsValue::NULL)),
                ("quota", Reflect::get(&estimate, &"quota".into()).unwrap_or(JsValue::NULL)),
            ]),
        ),
        (
            "memory",
            object(&[("wasm", number(wasm)), ("jsHeap", heap.map_or(JsValue::NULL, number))]),
        ),
        (
            "traffic",
            object(&[
                ("bytesIn", number(counters.bytes_in.get())),
                ("bytesOut", number(counters.bytes_out.get())),
                ("served", number(counters.served.get())),
            ]),
        ),
        ("transfers", number(node.active.borrow().len() as u64)),
    ]))
}

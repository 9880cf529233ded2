//! Progress reports to the page, at most every [`INTERVAL_MS`] and once at the end.

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::JsValue;

/// The least time between two reports of one transfer.
const INTERVAL_MS: f64 = 100.0;

/// A transfer's progress and the page's callback for it.
#[derive(Debug)]
pub struct Progress {
    id: String,
    phase: &'static str,
    /// Plaintext bytes done.
    pub bytes: u64,
    /// Plaintext bytes in all, when known.
    pub total: Option<u64>,
    /// Shard bytes acknowledged by (or received from) other peers.
    pub wire: u64,
    callback: Option<Function>,
    last: f64,
}

impl Progress {
    /// Progress of transfer `id` in `phase` ("upload" or "download").
    pub fn new(
        id: &str,
        phase: &'static str,
        total: Option<u64>,
        callback: Option<Function>,
    ) -> Self {
        Self { id: id.to_owned(), phase, bytes: 0, total, wire: 0, callback, last: 0.0 }
    }

    /// Calls the callback with `{ transferId, phase, bytes, total, wireBytes, done }`, unless
    /// the last report was too recent (a final report always goes out).
    pub fn report(&mut self, done: bool) {
        let Some(callback) = &self.callback else { return };
        let now = js_sys::Date::now();
        if !done && now - self.last < INTERVAL_MS {
            return;
        }
        self.last = now;
        let report = Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&report, &k.into(), &v);
        };
        set("transferId", self.id.as_str().into());
        set("phase", self.phase.into());
        set("bytes", (self.bytes as f64).into());
        set("total", self.total.map_or(JsValue::NULL, |t| (t as f64).into()));
        set("wireBytes", (self.wire as f64).into());
        set("done", done.into());
        let _ = callback.call1(&JsValue::NULL, &report);
    }
}

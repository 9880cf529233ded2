//! Small helper workers made from scripts embedded in the node: a browser runs some work on
//! the thread that asks for it (a WebSocket's transfers, WebCrypto's AES-GCM), and the node's
//! own thread is busy sealing and coding, so that work moves to threads of its own.

use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Each script's `blob:` URL, made once per thread.
    static URLS: RefCell<HashMap<&'static str, Option<String>>> = RefCell::new(HashMap::new());
}

/// Starts a worker running `script`, or `None` where none can start (no `Worker` in this
/// scope, or no `blob:` URLs). A content security policy that forbids `blob:` workers shows
/// later, as an `error` event on the worker: callers fall back then too.
pub(crate) fn start(script: &'static str) -> Option<web_sys::Worker> {
    let url = URLS
        .with(|urls| urls.borrow_mut().entry(script).or_insert_with(|| url_of(script)).clone())?;
    web_sys::Worker::new(&url).ok()
}

fn url_of(script: &str) -> Option<String> {
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/javascript");
    let parts = js_sys::Array::of1(&script.into());
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).ok()?;
    web_sys::Url::create_object_url_with_blob(&blob).ok()
}

/// A copy of `bytes` outside wasm memory, in a buffer of its own that can be transferred to a
/// helper worker.
pub(crate) fn transferable(bytes: &[u8]) -> js_sys::Uint8Array {
    let copy = js_sys::Uint8Array::new_with_length(bytes.len() as u32);
    copy.copy_from(bytes);
    copy
}

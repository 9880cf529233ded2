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

/// New buffers for helper workers are made in multiples of this.
const BUFFER_STEP: usize = 64 << 10;

/// Buffers a helper worker gave back, to carry later transfers to it: filling a fresh buffer
/// costs the first touch of new memory, several times a plain copy. At most `MAX_BYTES` of
/// them are kept.
#[derive(Debug, Default)]
pub(crate) struct Spares<const MAX_BYTES: usize> {
    buffers: Vec<js_sys::ArrayBuffer>,
    bytes: usize,
}

impl<const MAX_BYTES: usize> Spares<MAX_BYTES> {
    /// A copy of `bytes` outside wasm memory, to transfer to a helper worker: in the smallest
    /// spare buffer that fits, else in a new one (rounded up, so that it fits later copies of
    /// about the same size).
    pub(crate) fn copy_out(&mut self, bytes: &[u8]) -> js_sys::Uint8Array {
        let len = bytes.len();
        let fit = (self.buffers.iter().enumerate())
            .filter(|(_, b)| b.byte_length() as usize >= len)
            .min_by_key(|(_, b)| b.byte_length())
            .map(|(i, _)| i);
        let buffer = match fit {
            Some(i) => {
                let buffer = self.buffers.swap_remove(i);
                self.bytes -= buffer.byte_length() as usize;
                buffer
            }
            None => js_sys::ArrayBuffer::new(len.next_multiple_of(BUFFER_STEP) as u32),
        };
        let view = js_sys::Uint8Array::new_with_byte_offset_and_length(&buffer, 0, len as u32);
        view.copy_from(bytes);
        view
    }

    /// Keeps a buffer a helper worker gave back, while the spare ones stay under the bound.
    pub(crate) fn keep(&mut self, buffer: js_sys::ArrayBuffer) {
        let len = buffer.byte_length() as usize;
        if self.bytes + len <= MAX_BYTES {
            self.bytes += len;
            self.buffers.push(buffer);
        }
    }
}

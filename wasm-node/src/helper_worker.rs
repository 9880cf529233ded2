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
pub(crate) const BUFFER_STEP: usize = 64 << 10;

/// Buffers a helper worker (or `fetch`) gave back, to carry later transfers: filling a fresh
/// buffer costs the first touch of new memory, several times a plain copy. At most
/// `MAX_BYTES` of them are kept. A reused buffer still holds earlier bytes past the view
/// handed out; the whole buffer goes to the helper worker, which reads only the view, and
/// `fetch` reads only the view (the bytes are this node's own, and stay in its workers).
#[derive(Debug, Default)]
pub(crate) struct Spares<const MAX_BYTES: usize> {
    buffers: Vec<js_sys::ArrayBuffer>,
    bytes: usize,
    /// Buffers made new, for tests.
    made: usize,
}

impl<const MAX_BYTES: usize> Spares<MAX_BYTES> {
    /// A copy of `bytes` outside wasm memory, to transfer to a helper worker: in the smallest
    /// spare buffer that fits, else in a new one (rounded up, so that it fits later copies of
    /// about the same size).
    pub(crate) fn copy_out(&mut self, bytes: &[u8]) -> js_sys::Uint8Array {
        let view = self.empty(bytes.len());
        view.copy_from(bytes);
        view
    }

    /// A view of `len` bytes at the start of a spare buffer (or a new one), to be filled: it
    /// holds earlier bytes until then.
    pub(crate) fn empty(&mut self, len: usize) -> js_sys::Uint8Array {
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
            None => {
                self.made += 1;
                js_sys::ArrayBuffer::new(len.next_multiple_of(BUFFER_STEP) as u32)
            }
        };
        js_sys::Uint8Array::new_with_byte_offset_and_length(&buffer, 0, len as u32)
    }

    /// Keeps a buffer a helper worker gave back. Past the bound the smallest go first: the next
    /// copies are most likely the size of the largest (a file's segments, but its last).
    pub(crate) fn keep(&mut self, buffer: js_sys::ArrayBuffer) {
        let len = buffer.byte_length() as usize;
        if len > MAX_BYTES {
            return;
        }
        self.bytes += len;
        self.buffers.push(buffer);
        while self.bytes > MAX_BYTES {
            let smallest = (self.buffers.iter().enumerate())
                .min_by_key(|(_, b)| b.byte_length())
                .map(|(i, _)| i);
            let Some(i) = smallest else { break };
            self.bytes -= self.buffers.swap_remove(i).byte_length() as usize;
        }
    }

    /// Buffers made new so far.
    #[cfg(test)]
    pub(crate) fn made(&self) -> usize {
        self.made
    }
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    const STEP: usize = BUFFER_STEP;

    #[wasm_bindgen_test]
    fn the_smallest_spare_that_fits_carries_exactly_the_bytes() {
        let mut spares = Spares::<{ 4 * STEP }>::default();
        let big = spares.copy_out(&[7; STEP + 1]);
        let small = spares.copy_out(&[8; 10]);
        assert_eq!(
            (big.buffer().byte_length(), small.buffer().byte_length()),
            (2 * STEP as u32, STEP as u32)
        );
        spares.keep(big.buffer());
        spares.keep(small.buffer());
        assert_eq!(spares.made(), 2);
        // 100 bytes go into the small buffer, though the large one fits too.
        let view = spares.copy_out(&[9; 100]);
        assert_eq!((view.length(), view.buffer().byte_length()), (100, STEP as u32));
        assert_eq!(view.to_vec(), [9; 100]);
        // Then 60 KiB into the large one; nothing is made new.
        let view = spares.copy_out(&[1; 60 << 10]);
        assert_eq!(
            (view.length() as usize, view.buffer().byte_length()),
            (60 << 10, 2 * STEP as u32)
        );
        assert_eq!(spares.made(), 2);
        assert!(spares.copy_out(&[2; 5]).to_vec() == [2; 5] && spares.made() == 3);
    }

    #[wasm_bindgen_test]
    fn past_the_bound_the_smallest_spares_go() {
        let mut spares = Spares::<{ 4 * STEP }>::default();
        for len in [STEP, STEP, 3 * STEP] {
            spares.keep(js_sys::ArrayBuffer::new(len as u32));
        }
        // 5 steps: one small one went, the large one stayed.
        assert_eq!(spares.bytes, 4 * STEP);
        let mut sizes: Vec<u32> = spares.buffers.iter().map(|b| b.byte_length()).collect();
        sizes.sort();
        assert_eq!(sizes, [STEP as u32, 3 * STEP as u32]);
        // One over the bound by itself is not kept.
        spares.keep(js_sys::ArrayBuffer::new(5 * STEP as u32));
        assert_eq!(spares.bytes, 4 * STEP);
        assert!(spares.buffers.iter().all(|b| b.byte_length() < 5 * STEP as u32));
    }
}

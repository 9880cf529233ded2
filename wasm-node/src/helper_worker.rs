//! Small helper workers made from scripts embedded in the node: a browser runs some work on
//! the thread that asks for it (a WebSocket's transfers, WebCrypto's AES-GCM), and the node's
//! own thread is busy sealing and coding, so that work moves to threads of its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::Array;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::MessageEvent;

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

/// Requests waiting for a helper's answers, by request id.
type Waiting<A> = Rc<RefCell<HashMap<u32, oneshot::Sender<A>>>>;

/// A helper worker and the requests waiting for it. Requests and replies are arrays whose
/// first element is the request's id. When the worker fails (a policy that forbids `blob:`
/// workers shows this way, after it started), every request waiting gets the `unavailable`
/// answer, and the helper takes no more: callers then do the work on their own thread.
pub(crate) struct Helper<A> {
    worker: web_sys::Worker,
    waiting: Waiting<A>,
    next: Cell<u32>,
    broken: Rc<Cell<bool>>,
    /// Whether the worker has answered at least once: it runs here.
    answered: Rc<Cell<bool>>,
    _handlers: [Closure<dyn FnMut(JsValue)>; 2],
}

impl<A: 'static> Helper<A> {
    /// Starts a worker running `script`. `read` turns each message from it into the answer to
    /// the request its first element names, or `None` for a message that answers nothing.
    pub(crate) fn start(
        script: &'static str,
        mut read: impl FnMut(&Array) -> Option<A> + 'static,
        unavailable: fn() -> A,
    ) -> Option<Self> {
        let worker = start(script)?;
        let waiting: Waiting<A> = Rc::default();
        let broken = Rc::new(Cell::new(false));
        let answered = Rc::new(Cell::new(false));
        let message = {
            let (waiting, answered) = (Rc::clone(&waiting), Rc::clone(&answered));
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                answered.set(true);
                let reply: Array = event.unchecked_into::<MessageEvent>().data().unchecked_into();
                let id = reply.get(0).as_f64().unwrap_or(-1.0) as u32;
                let Some(answer) = read(&reply) else { return };
                if let Some(tx) = waiting.borrow_mut().remove(&id) {
                    let _ = tx.send(answer);
                }
            })
        };
        let error = {
            let (waiting, broken) = (Rc::clone(&waiting), Rc::clone(&broken));
            Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
                broken.set(true);
                for (_, tx) in waiting.borrow_mut().drain() {
                    let _ = tx.send(unavailable());
                }
            })
        };
        worker.set_onmessage(Some(message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(error.as_ref().unchecked_ref()));
        Some(Self {
            worker,
            waiting,
            next: Cell::new(0),
            broken,
            answered,
            _handlers: [message, error],
        })
    }

    /// Whether the worker failed: it takes no more requests.
    pub(crate) fn broken(&self) -> bool {
        self.broken.get()
    }

    /// Whether the worker has answered anything yet.
    pub(crate) fn answered(&self) -> bool {
        self.answered.get()
    }

    /// Sends the request `request` makes from its id, moving `transfer`'s buffers to the
    /// worker: the id and the receiver of the answer, or `None` when the worker cannot take
    /// it (then nothing was sent).
    pub(crate) fn send(
        &self,
        request: impl FnOnce(u32) -> Array,
        transfer: &Array,
    ) -> Option<(u32, oneshot::Receiver<A>)> {
        if self.broken.get() {
            return None;
        }
        let id = self.next.get();
        self.next.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        if self.worker.post_message_with_transfer(&request(id), transfer).is_err() {
            self.waiting.borrow_mut().remove(&id);
            return None;
        }
        Some((id, rx))
    }

    /// Stops waiting for request `id`; if it was waiting, sends `message` (which tells the
    /// worker to give up on it).
    pub(crate) fn forget(&self, id: u32, message: &JsValue) {
        if self.waiting.borrow_mut().remove(&id).is_some() {
            let _ = self.worker.post_message(message);
        }
    }
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

//! Shard puts posted from a worker of their own. `fetch` copies a request's body on the thread
//! that calls it (about 2 ms per MiB in Chromium, a fifth of the node's thread during an
//! upload), and that thread is the node's, which seals, codes and hashes the next stripes
//! meanwhile. So the node hands each put to a post worker: the body's buffer crosses
//! transferred and comes back as soon as `fetch` has taken its copy, and the reply comes back
//! as bytes, at most as many as the caller allows. Where no worker can start (a content
//! security policy without `blob:` in `worker-src`), the node posts itself.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::{Array, ArrayBuffer, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::helper_worker::{BUFFER_STEP, Helper, Spares};

/// The post worker's script. A request is `[id, url, headers, body, max]`, where `headers` is
/// a list of name and value pairs and `max` the most bytes of reply taken; `[id, null]` aborts
/// request `id`. Replies: `[id, 'sent', buffer]` once `fetch` has copied the body (the body's
/// buffer, given back), then `[id, 'done', status, receipt, reply]` or `[id, 'failed', why]`.
const POSTER: &str = r#"
const running = new Map();
onmessage = async ({ data: [id, url, headers, body, max] }) => {
  if (url === null) {
    running.get(id)?.abort();
    return;
  }
  const controller = new AbortController();
  running.set(id, controller);
  let pending;
  try {
    pending = fetch(url, { method: 'POST', headers, body, cache: 'no-store', signal: controller.signal });
  } catch (e) {
    pending = Promise.reject(e);
  }
  postMessage([id, 'sent', body.buffer], [body.buffer]);
  try {
    const response = await pending;
    const receipt = response.headers.get('x-shardweb-receipt');
    const chunks = [];
    let n = 0;
    const reader = response.body?.getReader();
    while (reader) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
      if (n > max) {
        controller.abort();
        throw new Error('the reply is over the size limit');
      }
      chunks.push(value);
    }
    const reply = new Uint8Array(n);
    let at = 0;
    for (const chunk of chunks) {
      reply.set(chunk, at);
      at += chunk.byteLength;
    }
    postMessage([id, 'done', response.status, receipt, reply], [reply.buffer]);
  } catch (e) {
    postMessage([id, 'failed', String(e?.message ?? e)]);
  } finally {
    running.delete(id);
  }
};
"#;

/// The most bytes of body buffers given back that are kept: a body of 8 MiB (a stripe of the
/// default layout for one relay) and the buffer of the one before it.
const MAX_SPARE: usize = 2 * ((8 << 20) + BUFFER_STEP);

/// What the post worker answered.
pub enum Posted {
    /// The relay's answer: its status, its receipt header if any, and its body.
    Done { status: u16, receipt: Option<String>, reply: Vec<u8> },
    /// The request failed (no connection, aborted, a reply over the limit).
    Failed(String),
    /// The worker could not run here: post on this thread.
    Unavailable,
}

/// The post worker of this thread.
pub struct PostWorker {
    helper: Helper<Posted>,
    /// Body buffers given back, to carry later bodies.
    spares: Rc<RefCell<Spares<MAX_SPARE>>>,
}

thread_local! {
    static WORKER: Option<Rc<PostWorker>> = PostWorker::start().map(Rc::new);
}

/// This thread's post worker, unless none could start or it failed.
pub fn post_worker() -> Option<Rc<PostWorker>> {
    WORKER.with(Clone::clone).filter(|w| !w.helper.broken())
}

impl PostWorker {
    fn start() -> Option<Self> {
        let spares: Rc<RefCell<Spares<MAX_SPARE>>> = Rc::default();
        let kept = Rc::clone(&spares);
        let read = move |reply: &Array| match reply.get(1).as_string().as_deref() {
            Some("sent") => {
                if let Ok(buffer) = reply.get(2).dyn_into::<ArrayBuffer>() {
                    kept.borrow_mut().keep(buffer);
                }
                None
            }
            Some("done") => Some(Posted::Done {
                status: reply.get(2).as_f64().unwrap_or(0.0) as u16,
                receipt: reply.get(3).as_string(),
                reply: Uint8Array::new(&reply.get(4)).to_vec(),
            }),
            _ => Some(Posted::Failed(reply.get(2).as_string().unwrap_or_default())),
        };
        let helper = Helper::start(POSTER, read, || Posted::Unavailable)?;
        Some(Self { helper, spares })
    }

    /// Posts a body of `len` bytes, written by `fill` into the view it is given, to `url` with
    /// `headers`, taking at most `max` bytes of reply. `None` when the worker cannot take it
    /// (then nothing was sent).
    pub fn post(
        self: &Rc<Self>,
        url: &str,
        headers: &[(&str, String)],
        len: usize,
        fill: impl FnOnce(&Uint8Array),
        max: usize,
    ) -> Option<Pending> {
        if self.helper.broken() {
            return None;
        }
        let body = self.spares.borrow_mut().empty(len);
        fill(&body);
        let pairs = Array::new();
        for (name, value) in headers {
            pairs.push(&Array::of2(&JsValue::from_str(name), &JsValue::from_str(value)));
        }
        let request =
            |id: u32| Array::of5(&id.into(), &url.into(), &pairs, &body, &(max as f64).into());
        let (id, reply) = self.helper.send(request, &Array::of1(&body.buffer()))?;
        Some(Pending { id, reply, worker: Rc::clone(self) })
    }
}

/// A put on the post worker; dropped before its answer, it is aborted there.
pub struct Pending {
    id: u32,
    reply: oneshot::Receiver<Posted>,
    worker: Rc<PostWorker>,
}

impl Pending {
    /// The post worker's answer.
    pub async fn answer(&mut self) -> Posted {
        (&mut self.reply).await.unwrap_or(Posted::Unavailable)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let abort = Array::of2(&self.id.into(), &JsValue::NULL);
        self.worker.helper.forget(self.id, &abort);
    }
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use shardweb_core::protocol::http_put::RECEIPT_HEADER;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn the_script_reads_the_receipt_header() {
        assert!(POSTER.contains(&format!("'{RECEIPT_HEADER}'")));
    }

    /// A post to nowhere fails with the reason, and its body's buffer comes back to carry the
    /// next body.
    #[wasm_bindgen_test]
    async fn a_failed_post_says_why_and_gives_its_buffer_back() {
        let worker = post_worker().expect("a post worker runs in this browser");
        let headers = [("content-type", "application/octet-stream".to_owned())];
        let mut pending = worker
            .post(
                "http://127.0.0.1:9/nowhere",
                &headers,
                1000,
                |b| {
                    b.fill(7, 0, 1000);
                },
                10,
            )
            .expect("the worker takes the post");
        match pending.answer().await {
            Posted::Failed(why) => assert!(!why.is_empty()),
            _ => panic!("a post to a closed port did not fail"),
        }
        let made = worker.spares.borrow().made();
        drop(worker.post("http://127.0.0.1:9/nowhere", &headers, 900, |_| {}, 10));
        assert_eq!(worker.spares.borrow().made(), made, "the buffer given back was not reused");
    }
}

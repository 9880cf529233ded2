//! The node as JavaScript sees it: a thin `WasmNode` over [`Node`], whose methods return
//! Promises that reject with `Error`s carrying a `code`. The npm package wraps it in a typed,
//! worker-hosted facade.

use std::rc::Rc;

use futures::StreamExt;
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_sys::{AbortSignal, Blob};

use crate::download::{self, GetOptions};
use crate::error::NodeError;
use crate::idb_store::TransferInfo;
use crate::node::{Node, NodeOptions};
use crate::tab_lock;
use crate::upload::{self, PutOptions, UploadState};

/// A running browser node.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct WasmNode {
    inner: Rc<Node>,
}

/// Reads the plain fields of an options object: functions, signals and `undefined` values are
/// left out (the first two are taken apart; the last mean "the default").
fn options<T: serde::de::DeserializeOwned + Default>(value: &JsValue) -> Result<T, NodeError> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    if !value.is_object() {
        return Err(NodeError::invalid("options must be an object"));
    }
    let plain = Object::new();
    for entry in Object::entries(value.unchecked_ref()).iter() {
        let entry: Array = entry.unchecked_into();
        let field = entry.get(1);
        if field.is_undefined() || field.is_function() || field.is_instance_of::<AbortSignal>() {
            continue;
        }
        // JSON would make them `null`, which means "the default".
        if field.as_f64().is_some_and(|n| !n.is_finite()) {
            return Err(NodeError::invalid(format!(
                "option {} must be a finite number",
                entry.get(0).as_string().unwrap_or_default()
            )));
        }
        let _ = Reflect::set(&plain, &entry.get(0), &field);
    }
    // Through JSON, which holds every plain value an option takes: a name the options do
    // not know (a misspelling) is refused, where reading the known names alone would pass
    // over it.
    let json = js_sys::JSON::stringify(&plain)
        .ok()
        .and_then(|j| j.as_string())
        .ok_or_else(|| NodeError::invalid("options must be plain values"))?;
    serde_json::from_str(&json).map_err(|e| NodeError::invalid(e.to_string()))
}

fn function(value: &JsValue, name: &str) -> Option<Function> {
    Reflect::get(value, &name.into()).ok().and_then(|f| f.dyn_into::<Function>().ok())
}

fn signal(value: &JsValue) -> Option<AbortSignal> {
    Reflect::get(value, &"signal".into()).ok().and_then(|s| s.dyn_into::<AbortSignal>().ok())
}

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

fn put_result(done: upload::PutResult) -> JsValue {
    object(&[
        ("link", done.link.to_string().into()),
        ("manifestId", done.link.manifest.to_string().into()),
        ("name", done.name.into()),
        ("size", (done.size as f64).into()),
    ])
}

/// Runs an upload to the end; resolves to `{ link, manifestId, name, size }`.
async fn run_upload(
    node: &Rc<Node>,
    state: UploadState,
    held: tab_lock::Held,
    options: &JsValue,
    file_copy: Option<upload::FileCopy>,
) -> Result<JsValue, NodeError> {
    let (on_progress, signal) = (function(options, "onProgress"), signal(options));
    let done = upload::run(node, state, held, on_progress, signal, file_copy).await?;
    Ok(put_result(done))
}

/// Takes transfer `id`'s tab lock, or says that it is held: another tab runs the transfer, or
/// a resume or a cancel of it is under way (here or there).
async fn hold(id: &str) -> Result<tab_lock::Held, NodeError> {
    tab_lock::hold(id).await.ok_or_else(|| NodeError::Busy {
        id: id.into(),
        place: "or being cancelled, in this tab or another",
    })
}

fn promise<F>(f: F) -> Promise
where
    F: std::future::Future<Output = Result<JsValue, NodeError>> + 'static,
{
    future_to_promise(async move { f.await.map_err(|e| e.to_js()) })
}

#[wasm_bindgen]
impl WasmNode {
    /// Starts a node: `{ relays, storeName, maxStoreBytes, logLevel, shardsOverHttp, onEvent }`. Resolves once
    /// at least one relay is connected (or at once when none is given).
    pub fn start(options_: JsValue) -> Promise {
        promise(async move {
            let opts: NodeOptions = options(&options_)?;
            crate::init_logging(&opts.log_level);
            let on_event = function(&options_, "onEvent");
            let node = Node::start(opts, on_event).await?;
            Ok(WasmNode { inner: node }.into())
        })
    }

    /// This node's peer id.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.inner.peer_id().to_string()
    }

    /// Uploads a `Blob` or `File`: `{ k, m, segmentSize, name, type, local, keep, resumable,
    /// onProgress, signal }`. Resolves to `{ link, manifestId, name, size }`.
    pub fn put(&self, file: Blob, options_: JsValue) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            let opts: PutOptions = options(&options_)?;
            let name = Reflect::get(&file, &"name".into()).ok().and_then(|n| n.as_string());
            let state = UploadState::new(file, name.unwrap_or_else(|| "file".into()), &opts)?;
            // Refused before anything is written: a new upload no relay can take leaves no
            // record (one that loses its relays part way keeps its record, to resume).
            if !state.local && node.connected_relays().is_empty() {
                return Err(NodeError::NoRelays { detail: "no relay is connected".into() });
            }
            // The lock is taken before the record is written, so that another tab never lists
            // the record of a running upload as interrupted. The id is new: no tab holds it.
            let held = hold(&state.id).await?;
            // The record is listed at once. The copy of the file in it, which lets a reload
            // resume the upload, is written beside the upload: copying a file into the store
            // takes the browser a second or more per 256 MiB, and waiting for it held every
            // upload back by as much. A reload before it lands (or a store with no room for
            // it) leaves an upload that cannot resume; so does `resumable: false`, by choice.
            node.store.put_transfer(&state.id, state.to_js(false)).await?;
            if opts.resumable == Some(false) {
                return run_upload(&node, state, held, &options_, None).await;
            }
            let (copied, file_copy) = futures::channel::oneshot::channel();
            let (store, id, record) = (Rc::clone(&node.store), state.id.clone(), state.to_js(true));
            wasm_bindgen_futures::spawn_local(async move {
                match store.put_transfer(&id, record).await {
                    Ok(()) => {}
                    Err(NodeError::QuotaExceeded { .. }) => {
                        tracing::info!(%id, "no room to keep the file: this upload cannot resume");
                    }
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "the file was not kept: this upload cannot resume");
                    }
                }
                let _ = copied.send(());
            });
            run_upload(&node, state, held, &options_, Some(file_copy)).await
        })
    }

    /// Resumes an unfinished upload by its transfer id (after a reload): `{ onProgress,
    /// signal }`. Resolves like `put`.
    pub fn resume(&self, id: String, options_: JsValue) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            if node.active.borrow().contains(&id) {
                return Err(NodeError::Busy { id, place: "in this tab" });
            }
            let held = hold(&id).await?;
            let record = node
                .store
                .transfer(&id)
                .await?
                .ok_or(NodeError::NoSuchTransfer { id: id.clone() })?;
            let kind = Reflect::get(&record, &"kind".into()).ok().and_then(|k| k.as_string());
            if kind.as_deref() == Some("download") {
                return Err(NodeError::invalid(format!(
                    "transfer {id} is a download: open its link again to continue it"
                )));
            }
            let state = UploadState::from_js(&record)?;
            run_upload(&node, state, held, &options_, None).await
        })
    }

    /// Opens a link: `{ keep, onProgress }`. Resolves to `{ manifestId, name, type, size,
    /// stream }` where `stream` is a `ReadableStream` of the plaintext.
    pub fn get(&self, link: String, options_: JsValue) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            let opts: GetOptions = options(&options_)?;
            let opening =
                download::open(&node, &link, &opts, function(&options_, "onProgress")).await?;
            let stream =
                wasm_streams::ReadableStream::from_stream(opening.stream.map(|r| r)).into_raw();
            Ok(object(&[
                ("manifestId", opening.manifest.to_string().into()),
                ("name", opening.info.meta.name.into()),
                ("type", opening.info.meta.mime.into()),
                ("size", (opening.size as f64).into()),
                ("stream", stream.into()),
            ]))
        })
    }

    /// Unfinished transfers: `[{ id, kind, name, type, size, link?, resumable }]`; `kind` ends
    /// in `:running` for one running in this tab or another.
    pub fn transfers(&self) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            let records = node.store.transfers().await?;
            // Running in another tab: it holds its lock.
            let elsewhere = tab_lock::running().await;
            let list = Array::new();
            for record in records {
                // A download resumes from its link; an upload, from the copy of its file.
                let file = Reflect::get(&record, &"blob".into()).is_ok_and(|b| b.is_object());
                if let Ok(mut info) = serde_wasm_bindgen::from_value::<TransferInfo>(record) {
                    let resumable = info.kind != "upload" || file;
                    // Running here, or in another tab (which holds its lock).
                    let here = node.active.borrow().contains(&info.id);
                    if here || elsewhere.contains(&info.id) {
                        info.kind.push_str(":running");
                    }
                    let listed = info.to_js();
                    let _ = Reflect::set(&listed, &"resumable".into(), &resumable.into());
                    list.push(&listed);
                }
            }
            Ok(list.into())
        })
    }

    /// Forgets an unfinished transfer and whatever it kept here. A transfer still running is
    /// refused (`BUSY`): it is stopped by the signal given to the call that runs it. An id no
    /// unfinished transfer has is refused too (`NO_SUCH_TRANSFER`).
    #[wasm_bindgen(js_name = cancelTransfer)]
    pub fn cancel_transfer(&self, id: String) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            if node.active.borrow().contains(&id) {
                return Err(NodeError::Busy {
                    id,
                    place: "in this tab: stop it with the signal given to the call that runs it",
                });
            }
            // An upload's record says whether it kept its shards here, with or without the
            // copy of its file in it; a download's is written only when it keeps them.
            let kept = |record: &JsValue| {
                let kind = Reflect::get(record, &"kind".into()).ok().and_then(|k| k.as_string());
                kind.as_deref() == Some("download")
                    || Reflect::get(record, &"keep".into()).ok().and_then(|k| k.as_bool())
                        != Some(false)
            };
            // Held while the cancel runs: a transfer another tab runs is refused, and no tab
            // resumes this one meanwhile.
            let _held = hold(&id).await?;
            let record = node
                .store
                .transfer(&id)
                .await?
                .ok_or(NodeError::NoSuchTransfer { id: id.clone() })?;
            crate::files::discard(&node, &id, kept(&record)).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The files this browser uploaded or downloaded: `[{ manifestId, link, name, type, size,
    /// origin, added }]`.
    pub fn files(&self) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            let files = node.store.files().await?;
            serde_wasm_bindgen::to_value(&files)
                .map_err(|e| NodeError::Storage { detail: e.to_string() })
        })
    }

    /// Removes a file from this browser: its record, manifest and shards. A file this browser
    /// does not keep is refused (`NOT_FOUND`).
    pub fn remove(&self, manifest_id: String) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            crate::files::remove(&node, &manifest_id).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Connected peers: `[{ peerId, address, relay, url? }]`.
    pub fn peers(&self) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move { crate::stats::peers(&node).await })
    }

    /// What the node is doing: peer id, relays, peers, store usage, memory, traffic.
    pub fn stats(&self) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move { crate::stats::stats(&node).await })
    }

    /// Stops the node: connections close, transfers in progress fail with `STOPPED`.
    pub fn stop(&self) -> Promise {
        let node = Rc::clone(&self.inner);
        promise(async move {
            node.stop().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

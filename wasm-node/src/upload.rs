//! Uploads from the browser: read the file through its stream, seal each segment with WebCrypto, code
//! it, keep its shards here and send each once to a relay, recording every acknowledged stripe
//! so that a reload resumes where the upload stopped.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::rc::Rc;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use js_sys::{Function, Object, Reflect, Uint8Array};
use shardweb_core::codec::{Encoder, FileId, FileKey, Params, Segment, ShardId};
use shardweb_core::manifest::FileMeta;
use shardweb_core::node::Upload;
use shardweb_core::{Link, Manifest};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortSignal, Blob};

use crate::error::NodeError;
use crate::file_read::{FileRead, ReadBy};
use crate::files;
use crate::idb_store::FileRecord;
use crate::net::{BrowserNet, Holder};
use crate::node::Node;
use crate::progress::Progress;
use crate::webcrypto::WebSealer;

/// Stripes in flight to relays at once: enough to keep the connections busy, few enough to
/// keep the worker's memory bounded. Each stripe goes as one batch per relay (the network
/// cuts it into requests: see `BrowserNet`'s puts).
const STRIPES_IN_FLIGHT: usize = 3;

/// What `put` may be told.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PutOptions {
    /// Data shards per stripe (default 4).
    pub k: Option<usize>,
    /// Parity shards per stripe (default 2).
    pub m: Option<usize>,
    /// Plaintext bytes per segment (default 4 MiB).
    pub segment_size: Option<usize>,
    /// The name to record (default: the file's own).
    pub name: Option<String>,
    /// The MIME type to record (default: the file's own).
    #[serde(rename = "type")]
    pub mime: Option<String>,
    /// Keep the file in this browser only, served to others through relay circuits.
    pub local: bool,
    /// Keep the shards here too (default true; always for `local`).
    pub keep: Option<bool>,
    /// Keep a copy of the file with the upload's record, so that a reload can resume it
    /// (default true). Without it the upload takes no room for the copy, nor the browser's
    /// time to write it, and a reload leaves a record that can only be cancelled.
    pub resumable: Option<bool>,
}

/// What an upload needs to run, and to resume after a reload: kept in IndexedDB.
#[derive(Debug, Clone)]
pub struct UploadState {
    pub id: String,
    pub key: FileKey,
    pub file_id: FileId,
    pub params: Params,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub local: bool,
    pub keep: bool,
    pub blob: Blob,
}

impl UploadState {
    /// A new upload of `blob` with `options`.
    pub fn new(blob: Blob, name: String, options: &PutOptions) -> Result<Self, NodeError> {
        let mut params = Params::new(options.k.unwrap_or(4), options.m.unwrap_or(2))?;
        if let Some(size) = options.segment_size {
            params = params.with_segment_size(size)?;
        }
        let mime = options.mime.clone().unwrap_or_else(|| blob.type_());
        let key = FileKey::generate()?;
        let file_id = FileId::generate()?;
        Ok(Self {
            id: format!("up-{}", data_encoding::HEXLOWER.encode(&file_id.0)),
            key,
            file_id,
            params,
            name: options.name.clone().unwrap_or(name),
            mime,
            size: blob.size() as u64,
            local: options.local,
            keep: options.local || options.keep.unwrap_or(true),
            blob,
        })
    }

    /// The record kept in IndexedDB (the key stays in this browser), with the file itself when
    /// `with_file`, so that a reload can resume.
    pub fn to_js(&self, with_file: bool) -> JsValue {
        let o = Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&o, &k.into(), &v);
        };
        set("kind", "upload".into());
        set("id", self.id.as_str().into());
        set("key", data_encoding::BASE64URL_NOPAD.encode(self.key.as_bytes()).into());
        set("fileId", data_encoding::HEXLOWER.encode(&self.file_id.0).into());
        set("k", (self.params.k() as f64).into());
        set("m", (self.params.m() as f64).into());
        set("segmentSize", (self.params.segment_size() as f64).into());
        set("name", self.name.as_str().into());
        set("type", self.mime.as_str().into());
        set("size", (self.size as f64).into());
        set("local", self.local.into());
        set("keep", self.keep.into());
        if with_file {
            set("blob", self.blob.clone().into());
        }
        o.into()
    }

    /// Reads a record back; a damaged record is a storage error.
    pub fn from_js(value: &JsValue) -> Result<Self, NodeError> {
        let bad = |what: &str| NodeError::Storage {
            detail: format!("the upload record's {what} is damaged"),
        };
        let get = |k: &str| Reflect::get(value, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let text = |k: &str| get(k).as_string().ok_or_else(|| bad(k));
        let number = |k: &str| get(k).as_f64().ok_or_else(|| bad(k)).map(|n| n as u64);
        let key: [u8; 32] = data_encoding::BASE64URL_NOPAD
            .decode(text("key")?.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("key"))?;
        let file_id: [u8; 16] = data_encoding::HEXLOWER
            .decode(text("fileId")?.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("file id"))?;
        let (k, m, segment) = (number("k")?, number("m")?, number("segmentSize")?);
        let params = Params::new(k as usize, m as usize)
            .and_then(|p| p.with_segment_size(segment as usize))
            .map_err(|_| bad("parameters"))?;
        Ok(Self {
            id: text("id")?,
            key: FileKey::from_bytes(key),
            file_id: FileId(file_id),
            params,
            name: text("name")?,
            mime: text("type")?,
            size: number("size")?,
            local: get("local").as_bool().unwrap_or(false),
            keep: get("keep").as_bool().unwrap_or(true),
            blob: get("blob").dyn_into::<Blob>().map_err(|_| NodeError::FileUnreadable {
                detail: "this upload kept no copy of the file to resume from: choose it again"
                    .into(),
            })?,
        })
    }
}

/// What a finished upload gives back.
#[derive(Debug, Clone)]
pub struct PutResult {
    pub link: Link,
    pub name: String,
    pub size: u64,
}

/// Copies `chunk` into wasm memory straight into the segments being built; returns those
/// it completed.
fn segments_of(encoder: &mut Encoder, chunk: &Uint8Array) -> Result<Vec<Segment>, NodeError> {
    let (len, mut taken) = (chunk.length(), 0);
    let mut out = Vec::new();
    while taken < len {
        let rest = chunk.subarray(taken, len);
        let (segment, n) = encoder.next_segment_from(rest.length() as usize, |dst| {
            rest.subarray(0, dst.len() as u32).copy_to(dst);
        })?;
        out.extend(segment);
        taken += n as u32;
    }
    Ok(out)
}

/// Writes to this browser's store that run while the upload goes on, at most `limit` at once.
#[derive(Debug)]
struct Writes {
    pending: VecDeque<oneshot::Receiver<Result<(), NodeError>>>,
    limit: usize,
}

/// Stripes being written to this browser's store at once.
const KEEPS_IN_FLIGHT: usize = 2;
/// Writes of acknowledged stripes' records at once: each takes every stripe acknowledged
/// since the one before.
const RECORDS_IN_FLIGHT: usize = 1;

impl Writes {
    fn new(limit: usize) -> Self {
        Self { pending: VecDeque::new(), limit }
    }

    /// Starts `write`, first waiting while too many writes are under way.
    async fn start(
        &mut self,
        write: impl Future<Output = Result<(), NodeError>> + 'static,
    ) -> Result<(), NodeError> {
        while self.pending.len() >= self.limit {
            self.wait_one().await?;
        }
        let (done, rx) = oneshot::channel();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = done.send(write.await);
        });
        self.pending.push_back(rx);
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), NodeError> {
        match self.pending.pop_front() {
            Some(rx) => rx.await.unwrap_or(Err(NodeError::Stopped { what: "the upload" })),
            None => Ok(()),
        }
    }

    /// Waits for every write; the first error, after all have ended.
    async fn finish(&mut self) -> Result<(), NodeError> {
        let mut first = Ok(());
        while !self.pending.is_empty() {
            if let Err(e) = self.wait_one().await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Waits for `work`, a wait on the relays, unless `signal` aborts first: then the upload
/// stops at once ([`NodeError::Stopped`]) rather than when a stalled relay's requests time
/// out (a minute over HTTP, then two over libp2p, for each holder). Dropping the wait drops
/// only requests to relays; this browser's writes run in tasks of their own, which the
/// upload still waits for before it ends.
async fn unless_aborted<T, E: Into<NodeError>>(
    signal: Option<&AbortSignal>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, NodeError> {
    let stopped = || NodeError::Stopped { what: "the upload" };
    let Some(signal) = signal else { return work.await.map_err(Into::into) };
    if signal.aborted() {
        return Err(stopped());
    }
    let (tx, aborted) = oneshot::channel::<()>();
    let tx = RefCell::new(Some(tx));
    let on_abort = Closure::<dyn FnMut()>::new(move || {
        if let Some(tx) = tx.borrow_mut().take() {
            let _ = tx.send(());
        }
    });
    let listener = on_abort.as_ref().unchecked_ref();
    let _ = signal.add_event_listener_with_callback("abort", listener);
    let work = std::pin::pin!(work);
    let outcome = futures::future::select(work, aborted).await;
    let _ = signal.remove_event_listener_with_callback("abort", listener);
    match outcome {
        futures::future::Either::Left((done, _)) => done.map_err(Into::into),
        futures::future::Either::Right(_) => Err(stopped()),
    }
}

fn check_running(node: &Node, signal: Option<&AbortSignal>) -> Result<(), NodeError> {
    if node.is_stopped() {
        return Err(NodeError::Stopped { what: "the node" });
    }
    if signal.is_some_and(AbortSignal::aborted) {
        return Err(NodeError::Stopped { what: "the upload" });
    }
    Ok(())
}

/// The copy of an upload's file into its record, written beside the upload (see
/// `WasmNode::put`); it ends whether or not it was written.
pub type FileCopy = oneshot::Receiver<()>;

/// Waits for the file's copy, if one is being written: a record is removed only after, so that
/// the copy cannot land after the removal and bring back a finished upload.
async fn copy_written(file_copy: &mut Option<FileCopy>) {
    if let Some(copy) = file_copy.take() {
        let _ = copy.await;
    }
}

/// Runs (or resumes) an upload to the end, holding its tab lock (`_held`) throughout so that
/// no other tab resumes or cancels it meanwhile. On a full store or a cancel, every shard it
/// kept here and its record are removed; on other failures the record stays, to be resumed.
pub async fn run(
    node: &Rc<Node>,
    state: UploadState,
    _held: crate::tab_lock::Held,
    on_progress: Option<Function>,
    signal: Option<AbortSignal>,
    mut file_copy: Option<FileCopy>,
) -> Result<PutResult, NodeError> {
    node.active.borrow_mut().push(state.id.clone());
    let result = upload(node, &state, on_progress, signal.as_ref(), &mut file_copy).await;
    // The upload counts as running until its file's copy has landed: a record removed before
    // (by `cancelTransfer`, say) would be brought back by it.
    copy_written(&mut file_copy).await;
    node.active.borrow_mut().retain(|id| *id != state.id);
    if let Err(e) = &result
        && matches!(e, NodeError::QuotaExceeded { .. } | NodeError::Stopped { what: "the upload" })
        && let Err(e) = files::discard(node, &state.id, state.keep).await
    {
        tracing::warn!(upload = %state.id, error = %e, "what the stopped upload kept could not be freed");
    }
    result
}

async fn upload(
    node: &Rc<Node>,
    state: &UploadState,
    on_progress: Option<Function>,
    signal: Option<&AbortSignal>,
    file_copy: &mut Option<FileCopy>,
) -> Result<PutResult, NodeError> {
    let store = &node.store;
    let sealer = WebSealer::new(&state.key, state.file_id).await?;
    let mut encoder = Encoder::new(state.params, &state.key, state.file_id);
    let recorded: HashMap<u64, Vec<ShardId>> =
        store.stripes(&state.id).await?.into_iter().collect();
    let mut upload = if state.local {
        None
    } else {
        let holders: Vec<Holder> =
            node.connected_relays().into_iter().map(Holder::Remote).collect();
        if holders.is_empty() {
            return Err(NodeError::NoRelays { detail: "no relay is connected".into() });
        }
        let in_flight = STRIPES_IN_FLIGHT * holders.len();
        Some(Upload::new(node.net.clone(), holders)?.with_in_flight(in_flight))
    };
    let mut progress = Progress::new(&state.id, "upload", Some(state.size), on_progress);
    let mut unacked: HashMap<u64, Vec<ShardId>> = HashMap::new();
    let (mut keeps, mut records) = (Writes::new(KEEPS_IN_FLIGHT), Writes::new(RECORDS_IN_FLIGHT));
    let mut step = Step {
        node,
        state,
        recorded: &recorded,
        unacked: &mut unacked,
        acked: Vec::new(),
        landed: Rc::default(),
        keeps: &mut keeps,
        records: &mut records,
        signal,
    };
    let result =
        encode_and_send(&mut step, &sealer, &mut encoder, upload.as_mut(), &mut progress, signal)
            .await;
    // Whatever happened, no write to the store may outlive the upload.
    let keeps_done = step.keeps.finish().await;
    let records_done = step.records.finish().await;
    result?;
    keeps_done?;
    records_done?;
    if let Some(upload) = upload.as_mut() {
        unless_aborted(signal, upload.flush()).await?;
        step.record_acks(upload).await?;
        step.records.finish().await?;
    }
    // The last moment an abort stops the upload: past it, the manifest is being written.
    check_running(node, signal)?;
    let encoded = encoder.into_encoded()?;
    let meta = FileMeta { name: state.name.clone(), mime: state.mime.clone() };
    let manifest = Manifest::create(&encoded, &meta, &state.key, &node.signing_key()?)?;
    let upload_went = upload.is_some();
    if let Some(upload) = upload {
        upload.finish(&manifest).await?;
    }
    let link = Link { manifest: manifest.id(), key: state.key.clone() };
    // The file is listed with its manifest, and the upload's record goes, in one transaction:
    // a reload never finds a finished upload's record to cancel (which would remove the
    // shards of a listed file), and an upload that fails before never leaves a manifest here
    // (each try makes a new one). The record goes only once its file's copy has landed, which
    // would bring it back.
    copy_written(file_copy).await;
    let file = state.keep.then(|| FileRecord::new(&link, &meta, state.size, "uploaded"));
    let listed = match store.finish_transfer(&state.id, file.as_ref(), Some(manifest.bytes())).await
    {
        Ok(()) => state.keep,
        // The relays hold the file, and its link stands: only this browser's copy goes, as
        // a cancel takes it (which frees even a store over its quota).
        Err(NodeError::QuotaExceeded { detail }) if upload_went => {
            tracing::warn!(upload = %state.id, %detail, "the file is stored, but this browser's store is full: it keeps no copy");
            if let Err(e) = crate::files::discard(node, &state.id, state.keep).await {
                tracing::warn!(upload = %state.id, error = %e, "what the upload kept could not be freed");
            }
            false
        }
        Err(e) => return Err(e),
    };
    if listed {
        let _ = node.peer.provide(manifest.id()).await;
    }
    progress.report(true);
    Ok(PutResult { link, name: state.name.clone(), size: state.size })
}

/// Reads the file chunk by chunk (the next ones read meanwhile: see [`FileRead`]) and seals, codes, keeps and sends every segment, the next one sealing while this one is
/// coded.
async fn encode_and_send(
    step: &mut Step<'_>,
    sealer: &WebSealer,
    encoder: &mut Encoder,
    mut upload: Option<&mut Upload<BrowserNet>>,
    progress: &mut Progress,
    signal: Option<&AbortSignal>,
) -> Result<(), NodeError> {
    let (blob, size) = (&step.state.blob, step.state.size);
    // A segment is at most `MAX_SEGMENT_SIZE` bytes, far below 4 GiB.
    let chunk = step.state.params.segment_size() as u32;
    let mut file = FileRead::start(blob, size, chunk, ReadBy::Stream);
    let mut sealing = VecDeque::new();
    loop {
        check_running(step.node, signal)?;
        let segments = match file.next().await? {
            Some(chunk) => {
                let segments = segments_of(encoder, &chunk)?;
                file.give_back();
                segments
            }
            None => vec![encoder.last_segment()?],
        };
        let last = segments.last().is_some_and(|s| s.last);
        for segment in segments {
            sealing.push_back(step.start(sealer, segment));
            while sealing.len() > SEAL_AHEAD || (last && !sealing.is_empty()) {
                let Some(pending) = sealing.pop_front() else { break };
                let len = pending.len;
                step.finish(encoder, upload.as_deref_mut(), pending).await?;
                progress.bytes += len;
                if let Some(upload) = upload.as_deref() {
                    progress.wire = upload.wire_bytes();
                }
                progress.report(false);
            }
        }
        if let Some(upload) = upload.as_deref_mut() {
            step.record_acks(upload).await?;
        }
        if last {
            return Ok(());
        }
    }
}

/// Segments sealed ahead of the one being coded: the crypto worker seals the next while this
/// thread codes and sends the one before.
const SEAL_AHEAD: usize = 1;

/// A segment started.
struct Pending {
    index: u64,
    len: u64,
    work: Work,
}

enum Work {
    /// Coded by a run before this one, into these shards.
    Coded(Vec<ShardId>),
    /// Being sealed.
    Sealing(LocalBoxFuture<'static, Result<Vec<u8>, NodeError>>),
}

/// One upload's per-segment work.
struct Step<'a> {
    node: &'a Rc<Node>,
    state: &'a UploadState,
    recorded: &'a HashMap<u64, Vec<ShardId>>,
    unacked: &'a mut HashMap<u64, Vec<ShardId>>,
    /// Stripes every holder has acknowledged whose own copy here is still being written: a
    /// stripe is recorded (and so skipped by a resume) only once both are done.
    acked: Vec<u64>,
    /// Stripes whose own copy here is written.
    landed: Rc<RefCell<HashSet<u64>>>,
    keeps: &'a mut Writes,
    records: &'a mut Writes,
    /// The caller's signal, which also stops a wait for the relays (see [`unless_aborted`]).
    signal: Option<&'a AbortSignal>,
}

impl Step<'_> {
    /// Starts one segment: sealing it, unless a run before this one already coded it.
    fn start(&self, sealer: &WebSealer, segment: Segment) -> Pending {
        let (index, len) = (segment.index, segment.data.len() as u64);
        let work = match self.recorded.get(&index) {
            Some(ids) => Work::Coded(ids.clone()),
            None => Work::Sealing(sealer.seal(index, segment.last, segment.data).boxed_local()),
        };
        Pending { index, len, work }
    }

    /// Codes, keeps and sends a started segment, or only counts it when a run before this one
    /// already did. Segments finish in order.
    async fn finish(
        &mut self,
        encoder: &mut Encoder,
        upload: Option<&mut Upload<BrowserNet>>,
        pending: Pending,
    ) -> Result<(), NodeError> {
        let index = pending.index;
        let sealed = match pending.work {
            Work::Coded(ids) => return Ok(encoder.skip_coded(index, &ids)?),
            Work::Sealing(sealed) => sealed.await?,
        };
        let stripe = encoder.code_sealed(index, sealed)?;
        let shards: Vec<_> =
            stripe.ids.iter().copied().zip(stripe.shards.iter().cloned()).collect();
        match upload {
            Some(upload) => {
                if self.state.keep {
                    // A copy here while the relays take theirs: written in the background.
                    let (store, landed) = (Rc::clone(&self.node.store), Rc::clone(&self.landed));
                    let id = self.state.id.clone();
                    let keep = async move {
                        store.put_transfer_shards(&id, index, &shards).await?;
                        landed.borrow_mut().insert(index);
                        Ok(())
                    };
                    self.keeps.start(keep).await?;
                }
                self.unacked.insert(index, stripe.ids.clone());
                unless_aborted(self.signal, upload.send(stripe)).await?;
            }
            None => {
                // The only copy: stored before the stripe counts as done.
                self.node.store.put_transfer_shards(&self.state.id, index, &shards).await?;
                self.node.store.put_stripe(&self.state.id, index, &stripe.ids).await?;
            }
        }
        Ok(())
    }

    /// Records the stripes every holder has acknowledged and, when the upload keeps a copy
    /// here, whose copy is written, for a resume to skip: one write for all of them, in the
    /// background (see [`RECORDS_IN_FLIGHT`]).
    async fn record_acks(
        &mut self,
        upload: &mut Upload<crate::net::BrowserNet>,
    ) -> Result<(), NodeError> {
        self.acked.extend(upload.take_acked());
        let mut ready: Vec<(u64, Vec<ShardId>)> = Vec::new();
        {
            let (keep, mut landed) = (self.state.keep, self.landed.borrow_mut());
            let unacked = &mut *self.unacked;
            self.acked.retain(|stripe| {
                if keep && !landed.remove(stripe) {
                    return true;
                }
                ready.extend(unacked.remove(stripe).map(|ids| (*stripe, ids)));
                false
            });
        }
        if ready.is_empty() {
            return Ok(());
        }
        let (store, id) = (Rc::clone(&self.node.store), self.state.id.clone());
        self.records.start(async move { store.put_stripes(&id, &ready).await }).await
    }
}

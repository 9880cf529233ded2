//! Downloads into the browser: resolve the manifest (here, the relays, then the DHT), check the
//! key, and stream the plaintext out as a `ReadableStream` that pulls one segment at a time,
//! with a bounded window of stripes in flight.

use std::collections::VecDeque;
use std::rc::Rc;

use futures::FutureExt;
use futures::future::{self, Either, LocalBoxFuture};
use futures::stream::{self, Stream};
use js_sys::{Function, Uint8Array};
use shardweb_core::manifest::Opened;
use shardweb_core::node::{Download, DownloadError, fetch_manifest};
use shardweb_core::{Link, Manifest, ManifestId};
use wasm_bindgen::JsValue;

use crate::error::NodeError;
use crate::idb_store::{FileRecord, TransferInfo};
use crate::net::{BrowserNet, Holder};
use crate::node::Node;
use crate::progress::Progress;
use crate::tab_lock;
use crate::webcrypto::WebSealer;

/// Stripes fetched ahead of the one being read.
const WINDOW: usize = 4;

/// What `get` may be told.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GetOptions {
    /// Keep the fetched shards here, to serve them on and to resume (default true).
    pub keep: Option<bool>,
}

/// An opened download: what the file is, and its plaintext as it arrives.
pub struct Opening {
    /// The manifest id.
    pub manifest: ManifestId,
    /// Name, type and hash.
    pub info: Opened,
    /// Plaintext bytes.
    pub size: u64,
    /// The plaintext, segment by segment; an error ends it.
    pub stream: std::pin::Pin<Box<dyn Stream<Item = Result<JsValue, JsValue>>>>,
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening")
            .field("manifest", &self.manifest)
            .field("size", &self.size)
            .finish()
    }
}

/// Finds the manifest: this browser's store, then the connected relays, then the holders the
/// DHT names. Returns it with the peers it found beyond the relays.
async fn resolve(
    node: &Node,
    net: &BrowserNet,
    id: ManifestId,
) -> Result<(Manifest, Vec<Holder>), NodeError> {
    if let Some(bytes) = node.store.get_manifest(id).await?
        && let Ok(manifest) = Manifest::decode_as(&id, &bytes)
    {
        return Ok((manifest, Vec::new()));
    }
    let relays: Vec<Holder> = node.connected_relays().into_iter().map(Holder::Remote).collect();
    match fetch_manifest(net, &relays, id).await {
        Ok(manifest) => Ok((manifest, Vec::new())),
        Err(DownloadError::NotFound { .. }) => {
            let found = node.peer.providers(id).await.unwrap_or_default();
            let others: Vec<Holder> =
                found.into_iter().map(Holder::Remote).filter(|h| !relays.contains(h)).collect();
            let manifest = fetch_manifest(net, &others, id)
                .await
                .map_err(|_| NodeError::NotFound { id: id.to_string() })?;
            Ok((manifest, others))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the file a link names; fails early on a bad link, an unknown file or a wrong key.
pub async fn open(
    node: &Rc<Node>,
    link: &str,
    options: &GetOptions,
    on_progress: Option<Function>,
) -> Result<Opening, NodeError> {
    let link = Link::parse(link)?;
    let id = format!("down-{}", link.manifest);
    // A download of this file already running (in another tab or this one) keeps it: this
    // one only reads, so that no two runs write under one transfer's record and notes.
    let held = hold_download(node, &id).await;
    let keep = options.keep.unwrap_or(true) && held.is_some();
    let net = node.net.keeping(keep, &id);
    let (manifest, others) = resolve(node, &net, link.manifest).await?;
    let info = manifest.open(&link.key)?;
    let mut holders = vec![Holder::Local];
    holders.extend(node.connected_relays().into_iter().map(Holder::Remote));
    holders.extend(others);
    // One request per holder and stripe: over HTTP one batch, over libp2p the network asks
    // a shard per request.
    let download = Download::start(net.clone(), holders, &manifest, &link.key, WINDOW).await?;
    // Asked when the relays lack some stripe, and as soon as the holders known come to (one
    // vanished, say).
    let (weak, wanted) = (Rc::downgrade(node), link.manifest);
    let mut download = download.with_more_holders(move || {
        let node = weak.upgrade();
        async move {
            let Some(node) = node else { return Vec::new() };
            let found = node.peer.providers(wanted).await.unwrap_or_default();
            found.into_iter().map(Holder::Remote).collect()
        }
        .boxed_local()
    });
    download.search_if_short().await;
    if let Some((stripe, found, needed)) = download.unlocated() {
        return Err(NodeError::NotEnoughShards { stripe, found, needed });
    }
    let sealer = WebSealer::new(&link.key, manifest.file_id()).await?;
    let size = manifest.layout().size();
    node.active.borrow_mut().push(id.clone());
    let state = State {
        node: Rc::clone(node),
        net,
        download,
        sealer,
        progress: Progress::new(&id, "download", Some(size), on_progress),
        manifest_bytes: manifest.bytes().clone(),
        link,
        meta: info.meta.clone(),
        keep,
        id,
        recorded: false,
        done: false,
        opening: VecDeque::new(),
        failed: None,
        left: false,
        held,
    };
    Ok(Opening {
        manifest: manifest.id(),
        info,
        size,
        stream: Box::pin(stream::unfold(state, next)),
    })
}

/// A download being read.
struct State {
    node: Rc<Node>,
    /// The network the download fetches through, to wait for the shards it keeps.
    net: BrowserNet,
    download: Download<BrowserNet>,
    sealer: WebSealer,
    progress: Progress,
    /// The manifest, stored with the transfer's record once reading starts.
    manifest_bytes: bytes::Bytes,
    link: Link,
    meta: shardweb_core::FileMeta,
    keep: bool,
    id: String,
    /// Whether the transfer and its manifest are recorded, to be listed after a reload: once
    /// reading starts (a stream cancelled unread leaves nothing).
    recorded: bool,
    done: bool,
    /// Segments being opened, in order.
    opening: VecDeque<LocalBoxFuture<'static, Result<Uint8Array, NodeError>>>,
    /// Why fetching ahead failed, reported once the segments before it are handed out.
    failed: Option<NodeError>,
    /// Whether the download has stopped counting as running (or is about to: see
    /// [`State::leave_when_kept`]), once, whether it finished, failed or was dropped.
    left: bool,
    /// This tab's lock on the transfer, unless another tab downloads the same file.
    held: Option<tab_lock::Held>,
}

impl State {
    /// Stops counting as running once the shards this download handed to the store are
    /// written: its record stays, to be opened again or cancelled, and a cancel then finds
    /// every shard it added noted (none is written after it).
    fn leave_when_kept(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        self.net.stop_keeping();
        let (node, net, id) = (Rc::clone(&self.node), self.net.clone(), self.id.clone());
        let held = self.held.take();
        if held.is_some() {
            node.leaving.borrow_mut().push(id.clone());
        }
        wasm_bindgen_futures::spawn_local(async move {
            net.kept().await;
            // Off the list once the lock is free, so that a run waiting for it takes it.
            if let Some(held) = held {
                held.release().await;
                remove_one(&node.leaving, &id);
            }
            stop_running(&node, &id);
        });
    }
}

/// Takes one run of download `id` off the node's running transfers (another run of the same
/// file, which only reads, may still be listed under the same id).
fn stop_running(node: &Node, id: &str) {
    remove_one(&node.active, id);
}

fn remove_one(list: &std::cell::RefCell<Vec<String>>, id: &str) {
    let mut list = list.borrow_mut();
    if let Some(at) = list.iter().position(|listed| listed == id) {
        list.remove(at);
    }
}

/// Takes download `id`'s lock, waiting for it while a run of it in this tab is winding down
/// (its stream was cancelled, and it writes what it fetched: a save the user retries at once,
/// say). `None` while another run of it holds the lock, here or in another tab.
async fn hold_download(node: &Node, id: &str) -> Option<tab_lock::Held> {
    /// The last writes of a run take seconds at most.
    const WINDING_DOWN: std::time::Duration = std::time::Duration::from_secs(30);
    if node.leaving.borrow().iter().any(|leaving| leaving == id) {
        tab_lock::hold_within(id, WINDING_DOWN).await
    } else {
        tab_lock::hold(id).await
    }
}

impl Drop for State {
    /// A download dropped before its end (its stream cancelled by the reader, maybe while it
    /// was finishing) stops running.
    fn drop(&mut self) {
        self.leave_when_kept();
    }
}

async fn next(mut state: State) -> Option<(Result<JsValue, JsValue>, State)> {
    if state.done {
        return None;
    }
    match segment(&mut state).await {
        Ok(Some(chunk)) => Some((Ok(chunk), state)),
        Ok(None) => {
            state.done = true;
            finish(&mut state).await;
            None
        }
        Err(e) => {
            state.done = true;
            state.leave_when_kept();
            Some((Err(e.to_js()), state))
        }
    }
}

/// The next segment's plaintext, opened with WebCrypto; `None` after the last.
async fn segment(state: &mut State) -> Result<Option<JsValue>, NodeError> {
    if state.node.is_stopped() {
        return Err(NodeError::Stopped { what: "the node" });
    }
    if state.keep && !state.recorded {
        state.recorded = true;
        let record = TransferInfo {
            id: state.id.clone(),
            kind: "download".into(),
            name: state.meta.name.clone(),
            mime: state.meta.mime.clone(),
            size: state.progress.total.unwrap_or(0) as f64,
            link: Some(state.link.to_string()),
        };
        let manifest = (state.link.manifest, &state.manifest_bytes[..]);
        match state.node.store.put_transfer_with(&state.id, record.to_js(), manifest).await {
            Ok(()) => {}
            // A full store: the download goes on, keeping nothing (as when the store fills
            // part way), and nothing of it was written.
            Err(NodeError::QuotaExceeded { detail }) => {
                tracing::warn!(file = %state.link.manifest, %detail, "the store is full: this download keeps nothing");
                state.keep = false;
                state.net.stop_keeping();
            }
            Err(e) => return Err(e),
        }
    }
    // One segment opens on the crypto worker while the next is fetched and decoded here. The
    // call that finds no more segments ends the download, so it waits until every segment
    // before it has been opened and handed out.
    if state.opening.is_empty() {
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        let Some(sealed) = state.download.next_sealed().await? else { return Ok(None) };
        state.opening.push_back(state.sealer.open_to_js(sealed).boxed_local());
    }
    let (next, stripes) = state.download.position();
    if state.opening.len() <= OPEN_AHEAD
        && next < stripes
        && state.failed.is_none()
        && let Some(front) = state.opening.front_mut()
    {
        // Fetch the next segment while this one opens, but hand this one out as soon as it is
        // open: a slow or failing stripe does not hold back one that is ready. A failure is
        // kept for the call after this segment (fetching is cancel-safe: replies stay queued
        // in the download).
        let first = {
            let fetch = std::pin::pin!(state.download.next_sealed());
            match future::select(fetch, front).await {
                Either::Left((fetched, _)) => Either::Left(fetched),
                Either::Right((opened, _)) => Either::Right(opened),
            }
        };
        match first {
            Either::Left(Ok(Some(sealed))) => {
                state.opening.push_back(state.sealer.open_to_js(sealed).boxed_local());
            }
            Either::Left(Ok(None)) => {}
            Either::Left(Err(e)) => state.failed = Some(e.into()),
            Either::Right(opened) => {
                state.opening.pop_front();
                return handed_out(state, opened?).map(Some);
            }
        }
    }
    let Some(opening) = state.opening.pop_front() else { return Ok(None) };
    handed_out(state, opening.await?).map(Some)
}

/// Counts an opened segment into the progress and gives it to the stream: the browser's
/// buffer, never copied into wasm memory.
fn handed_out(state: &mut State, plaintext: Uint8Array) -> Result<JsValue, NodeError> {
    state.progress.bytes += u64::from(plaintext.length());
    state.progress.wire = state.download.wire_bytes();
    state.progress.report(false);
    Ok(plaintext.into())
}

/// Segments opening ahead of the one handed out.
const OPEN_AHEAD: usize = 1;

/// Records the finished file and announces it, when its shards were kept.
async fn finish(state: &mut State) {
    let node = &state.node;
    // The download is over once its shards are kept; the file is listed as held here, and
    // announced, only if every one was. Replies still on their way are surplus.
    state.net.stop_keeping();
    let kept = state.net.kept().await;
    if state.keep && kept {
        // Listed, and its record gone, in one transaction: nothing in between sees its shards
        // as nobody's (see `IdbStore::forget`).
        let size = state.progress.total.unwrap_or(state.progress.bytes);
        let record = FileRecord::new(&state.link, &state.meta, size, "downloaded");
        let listed = node.store.file(&record.manifest_id).await.ok().flatten().is_some();
        let file = (!listed).then_some(record);
        if let Err(e) = node.store.finish_transfer(&state.id, file.as_ref(), None).await {
            tracing::warn!(file = %state.link.manifest, error = %e, "the file was read but could not be listed as held here");
        }
        let _ = node.peer.provide(state.link.manifest).await;
    } else if state.keep {
        // What it kept would be listed nowhere: it goes.
        tracing::warn!(file = %state.link.manifest, "not every shard was kept: the file is not listed as held here");
        if let Err(e) = crate::files::discard(node, &state.id, true).await {
            tracing::warn!(file = %state.link.manifest, error = %e, "what the download kept could not be freed");
        }
    }
    // A download that kept nothing leaves alone any record of the file's: an earlier run's,
    // interrupted, or the one of a run that is going on.
    stop_running(node, &state.id);
    state.left = true;
    state.progress.report(true);
    state.node.emit("downloaded", &[("manifestId", state.link.manifest.to_string().into())]);
}

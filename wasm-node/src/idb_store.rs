//! The browser node's store in IndexedDB: shards, manifests, the files this browser uploaded or
//! holds, and the state of unfinished transfers.
//!
//! One database per node name, version 1, with these object stores (out-of-line string keys):
//!
//! | store | key | value |
//! |---|---|---|
//! | `shards` | shard id, 64 hex digits | the shard's bytes (a `Blob`, or an older `Uint8Array`) |
//! | `manifests` | manifest id, base64url | the manifest's bytes (`Uint8Array`) |
//! | `files` | manifest id | a [`FileRecord`] |
//! | `transfers` | transfer id | an unfinished transfer (an object; uploads keep their `Blob`) |
//! | `stripes` | `<transfer id>/<stripe, 16 hex digits>` | the stripe's shard ids (`Uint8Array`) |
//! | `stripes` | `<transfer id>#added/<part>` | the ids of the shards one write added |
//! | `stripes` | `<transfer id>#uses/<part>` | the ids of every shard one write put here |
//! | `meta` | `"bytes"` | bytes of shards held (a number) |
//!
//! Shard writes go in batches, one transaction each, and update the byte count in the same
//! transaction, so that two tabs writing at once keep it exact. Every shard read is re-hashed;
//! one that fails is dropped and reported as absent (one whose `Blob` cannot be read is
//! reported as absent and kept). A write that would pass the node's own
//! limit, or that the browser refuses for quota, fails with [`NodeError::QuotaExceeded`] and
//! writes nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use bytes::Bytes;
use indexed_db_futures::KeyRange;
use indexed_db_futures::database::Database;
use indexed_db_futures::internals::SystemRepr;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::{
    Transaction, TransactionDurability, TransactionMode, TransactionOptions,
};
use js_sys::{Array, Uint8Array};
use shardweb_core::codec::VerifiedShard;
use shardweb_core::{Manifest, ManifestId, ShardId};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use crate::error::NodeError;

const SHARDS: &str = "shards";
const MANIFESTS: &str = "manifests";
const FILES: &str = "files";
const TRANSFERS: &str = "transfers";
const STRIPES: &str = "stripes";
const META: &str = "meta";
const BYTES_KEY: &str = "bytes";
const VERSION: u32 = 1;

thread_local! {
    /// The buffer shards are copied into for IndexedDB (see [`shard_value`]).
    static SCRATCH: RefCell<Option<Uint8Array>> = const { RefCell::new(None) };
}

/// `bytes` as a `Blob` for IndexedDB's `put`. IndexedDB keeps a `Blob` as it is, where it
/// would serialize a `Uint8Array` and then (being over 64 KiB) wrap that in a blob of its own:
/// writing 384 MiB of 1 MiB shards in Chromium took 2.1-2.2 s of CPU in all as `Blob`s
/// against 2.5 as arrays (the renderer 0.72-0.75 against 1.07-1.10 s), and reading them back
/// 1.1-1.2 against 1.45 s. A `Blob`'s size is known without reading it, so removals no longer
/// read the shards they delete. The bytes go through one JS buffer, reused for every shard of
/// a length (a fresh buffer's first touch costs several times a copy), which `new Blob` copies
/// before it returns.
fn shard_value(bytes: &[u8]) -> Result<Blob, NodeError> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let buffer = match scratch.as_ref() {
            Some(buffer) if buffer.length() as usize == bytes.len() => buffer.clone(),
            _ => scratch.insert(Uint8Array::new_with_length(bytes.len() as u32)).clone(),
        };
        buffer.copy_from(bytes);
        Blob::new_with_u8_array_sequence(&Array::of1(&buffer))
            .map_err(|e| NodeError::Storage { detail: crate::error::describe(&e) })
    })
}

/// The length of a stored shard's value, without reading a `Blob`'s bytes.
fn value_len(value: &JsValue) -> Option<u64> {
    if let Some(blob) = value.dyn_ref::<Blob>() {
        Some(blob.size() as u64)
    } else {
        value.dyn_ref::<Uint8Array>().map(|a| u64::from(a.length()))
    }
}

/// A stored shard's value, taken out of the transaction that found it: an array's bytes are
/// copied into wasm memory at once; a `Blob`'s are read by the browser after the transaction
/// (a `Blob` from IndexedDB stays readable), by [`read_in_order`].
enum Stored {
    Read(Vec<u8>),
    Blob(Blob),
}

impl Stored {
    /// What a read of the `shards` store found: `None` for nothing, or a value of another kind.
    fn of(found: Option<JsValue>) -> Option<Self> {
        let value = found?;
        match value.dyn_into::<Blob>() {
            Ok(blob) => Some(Self::Blob(blob)),
            Err(value) => value.dyn_into::<Uint8Array>().ok().map(|a| Self::Read(a.to_vec())),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Self::Read(bytes) => bytes.len() as u64,
            Self::Blob(blob) => blob.size() as u64,
        }
    }
}

/// The bytes of `found`, in order, with at most [`BLOB_READS_AHEAD`] `Blob`s being read at
/// once (so that memory holds a few shards beyond those read, however many are asked for).
/// A `Blob` the browser cannot read gives the browser's error.
async fn read_in_order(found: Vec<Option<Stored>>) -> Vec<Option<Result<Vec<u8>, JsValue>>> {
    let start = |stored: Option<Stored>| {
        stored.map(|stored| match stored {
            Stored::Read(bytes) => futures::future::Either::Left(async move { Ok(bytes) }),
            Stored::Blob(blob) => {
                // Started here, not when first polled: the browser reads meanwhile.
                let read = JsFuture::from(blob.array_buffer());
                futures::future::Either::Right(
                    async move { Ok(Uint8Array::new(&read.await?).to_vec()) },
                )
            }
        })
    };
    let mut found = found.into_iter();
    let mut reading: std::collections::VecDeque<_> =
        found.by_ref().take(BLOB_READS_AHEAD).map(start).collect();
    let mut out = Vec::with_capacity(reading.len() + found.len());
    while let Some(next) = reading.pop_front() {
        reading.extend(found.next().map(start));
        out.push(match next {
            Some(read) => Some(read.await),
            None => None,
        });
    }
    out
}

/// `Blob`s of shards read at once by [`read_in_order`].
const BLOB_READS_AHEAD: usize = 4;

/// A file this browser uploaded or holds, as the "my files" list shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// The manifest id (base64url).
    pub manifest_id: String,
    /// The share link, key included: it never leaves this browser but through the user.
    pub link: String,
    /// The file's name.
    pub name: String,
    /// Its MIME type, possibly empty.
    #[serde(rename = "type")]
    pub mime: String,
    /// Plaintext bytes.
    pub size: f64,
    /// `"uploaded"` or `"downloaded"`.
    pub origin: String,
    /// Milliseconds since the epoch when it was added.
    pub added: f64,
}

impl FileRecord {
    /// The record of a file added now.
    pub fn new(
        link: &shardweb_core::Link,
        meta: &shardweb_core::FileMeta,
        size: u64,
        origin: &str,
    ) -> Self {
        Self {
            manifest_id: link.manifest.to_string(),
            link: link.to_string(),
            name: meta.name.clone(),
            mime: meta.mime.clone(),
            size: size as f64,
            origin: origin.to_owned(),
            added: js_sys::Date::now(),
        }
    }
}

/// What the page is told of an unfinished transfer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferInfo {
    /// The transfer id.
    pub id: String,
    /// `"upload"` or `"download"`.
    pub kind: String,
    /// The file's name.
    pub name: String,
    /// Its MIME type.
    #[serde(rename = "type")]
    pub mime: String,
    /// Plaintext bytes.
    pub size: f64,
    /// The link, for a download (an upload has none until it is done).
    #[serde(default)]
    pub link: Option<String>,
}

impl TransferInfo {
    /// As a plain JavaScript object.
    pub fn to_js(&self) -> JsValue {
        serde_wasm_bindgen::to_value(self).unwrap_or(JsValue::NULL)
    }
}

/// The node's IndexedDB database.
#[derive(Debug)]
pub struct IdbStore {
    db: Database,
    name: String,
    max_bytes: Cell<Option<u64>>,
}

impl IdbStore {
    /// Opens (creating or upgrading) the database `name`. `max_bytes` caps the bytes of shards
    /// kept, besides whatever the browser allows.
    pub async fn open(name: &str, max_bytes: Option<u64>) -> Result<Self, NodeError> {
        let db = Database::open(name)
            .with_version(VERSION)
            .with_on_upgrade_needed(|event, db| {
                if event.old_version() < 1.0 {
                    for store in [SHARDS, MANIFESTS, FILES, TRANSFERS, STRIPES, META] {
                        db.create_object_store(store).build()?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| NodeError::Storage { detail: format!("cannot open IndexedDB: {e}") })?;
        Ok(Self { db, name: name.to_owned(), max_bytes: Cell::new(max_bytes) })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's own cap on the bytes of shards kept.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes.get()
    }

    /// Closes the database; the store is unusable afterwards.
    pub fn close(self) {
        self.db.close();
    }

    fn tx(&self, stores: &[&str], mode: TransactionMode) -> Result<Transaction<'_>, NodeError> {
        self.db.transaction(stores.to_vec()).with_mode(mode).build().map_err(storage)
    }

    fn relaxed_tx(&self, stores: &[&str]) -> Result<Transaction<'_>, NodeError> {
        let mut options = TransactionOptions::new();
        options.set_durability(TransactionDurability::Relaxed);
        self.db
            .transaction(stores.to_vec())
            .with_mode(TransactionMode::Readwrite)
            .with_options(options)
            .build()
            .map_err(storage)
    }

    /// Stores a batch of shards in one transaction, verifying each against its id first.
    /// Returns, per shard, whether it was new. Fails whole (nothing written) on a mismatch, a
    /// full store, or a storage error.
    pub async fn put_shards(&self, shards: &[(ShardId, Bytes)]) -> Result<Vec<bool>, NodeError> {
        for (id, bytes) in shards {
            if ShardId::of(bytes) != *id {
                return Err(NodeError::Corrupt {
                    detail: format!("shard {id} does not match its bytes"),
                });
            }
        }
        self.put_own_shards(shards).await
    }

    /// [`IdbStore::put_shards`] for shards whose ids this node has just computed from these
    /// very bytes (the encoder's output, or a download's shards checked on arrival): hashing
    /// them again would cost as much as coding them.
    pub(crate) async fn put_own_shards(
        &self,
        shards: &[(ShardId, Bytes)],
    ) -> Result<Vec<bool>, NodeError> {
        self.put_own_shards_for(shards, None).await
    }

    /// [`IdbStore::put_own_shards`] for transfer `transfer` (an upload's stripe, or a
    /// download's write, numbered `part`): the same transaction notes which of them it added,
    /// so that forgetting the transfer (see [`IdbStore::forget`]) removes those and no
    /// shard held before it.
    pub(crate) async fn put_transfer_shards(
        &self,
        transfer: &str,
        part: u64,
        shards: &[(ShardId, Bytes)],
    ) -> Result<Vec<bool>, NodeError> {
        self.put_own_shards_for(shards, Some((transfer, part))).await
    }

    async fn put_own_shards_for(
        &self,
        shards: &[(ShardId, Bytes)],
        transfer: Option<(&str, u64)>,
    ) -> Result<Vec<bool>, NodeError> {
        let tx = match transfer {
            Some(_) => self.relaxed_tx(&[SHARDS, META, STRIPES])?,
            None => self.relaxed_tx(&[SHARDS, META])?,
        };
        let raw = raw_tx(&tx);
        let store = tx.object_store(SHARDS).map_err(storage)?;
        let meta = tx.object_store(META).map_err(storage)?;
        // Every question goes to the database before any answer is awaited: one round trip
        // to the browser's storage for the batch, not one per shard. An upload's notes for
        // this stripe are read too: a run before a reload may have written some of it.
        let notes = match transfer {
            Some((transfer, part)) => {
                let stripes = tx.object_store(STRIPES).map_err(storage)?;
                let mut notes = Vec::with_capacity(2);
                // Whether each note lists only the shards added, or every shard written.
                for (prefix, only_added) in
                    [(added_prefix(transfer), true), (uses_prefix(transfer), false)]
                {
                    let key = format!("{prefix}{part:016x}");
                    let earlier = stripes.get::<JsValue, _, _>(key.clone()).primitive();
                    notes.push((key, earlier.map_err(storage)?, only_added));
                }
                Some((stripes, notes))
            }
            None => None,
        };
        let mut held = Vec::with_capacity(shards.len());
        for (id, _) in shards {
            held.push(store.count().with_query(id.to_string()).primitive().map_err(storage)?);
        }
        let mut used = read_bytes(&meta, &store).await?;
        let mut fresh = Vec::with_capacity(shards.len());
        let mut added = 0u64;
        // A batch can name one shard twice (a stripe's zero padding shards share an id): the
        // answers above predate every write, so a repeat counts as held here.
        let mut seen = HashSet::with_capacity(shards.len());
        for ((id, bytes), held) in shards.iter().zip(held) {
            let key = id.to_string();
            let is_new = held.await.map_err(storage)? == 0 && seen.insert(*id);
            if is_new {
                added += bytes.len() as u64;
                store
                    .put(JsValue::from(shard_value(bytes)?))
                    .with_key(key)
                    .primitive()
                    .map_err(storage)?;
            }
            fresh.push(is_new);
        }
        if let Some(max) = self.max_bytes.get()
            && used + added > max
        {
            let _ = tx.abort().await;
            return Err(NodeError::QuotaExceeded {
                detail: format!("{used} + {added} bytes is over this node's limit of {max}"),
            });
        }
        used += added;
        meta.put(JsValue::from(used as f64)).with_key(BYTES_KEY).primitive().map_err(storage)?;
        // Two notes: the shards this write added (which a cancel removes), and every shard
        // it wrote, held before or not (which nothing else may remove while the transfer
        // runs: see `IdbStore::forget`).
        if let Some((stripes, notes)) = notes {
            for (key, earlier, only_added) in notes {
                let mut ids = earlier
                    .await
                    .map_err(storage)?
                    .and_then(|v| v.dyn_into::<Uint8Array>().ok())
                    .map_or_else(Vec::new, |a| a.to_vec());
                let noted = shards.iter().zip(&fresh).filter(|(_, fresh)| **fresh || !only_added);
                ids.extend(noted.flat_map(|((id, _), _)| id.0));
                stripes
                    .put(JsValue::from(Uint8Array::from(&ids[..])))
                    .with_key(key)
                    .primitive()
                    .map_err(storage)?;
            }
        }
        commit(tx, &raw).await?;
        Ok(fresh)
    }

    /// Reads shards in one transaction; `None` for each that is absent or fails its hash (a
    /// corrupt one is then deleted).
    pub async fn get_shards(&self, ids: &[ShardId]) -> Result<Vec<Option<Bytes>>, NodeError> {
        let shards = self.get_verified_shards(ids).await?;
        Ok(shards.into_iter().map(|s| s.map(VerifiedShard::into_bytes)).collect())
    }

    /// [`IdbStore::get_shards`], each shard with the proof of its check, so that a download
    /// from this store does not hash it again.
    pub async fn get_verified_shards(
        &self,
        ids: &[ShardId],
    ) -> Result<Vec<Option<VerifiedShard>>, NodeError> {
        let tx = self.tx(&[SHARDS], TransactionMode::Readonly)?;
        let store = tx.object_store(SHARDS).map_err(storage)?;
        let requests = ids
            .iter()
            .map(|id| store.get::<JsValue, _, _>(id.to_string()).primitive().map_err(storage))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found = Vec::with_capacity(ids.len());
        for request in requests {
            found.push(Stored::of(request.await.map_err(storage)?));
        }
        drop(tx);
        let mut corrupt = Vec::new();
        let read = read_in_order(found).await;
        let out =
            ids.iter().zip(read).map(|(id, bytes)| checked(*id, bytes?, &mut corrupt)).collect();
        if !corrupt.is_empty() {
            self.delete_shards(&corrupt).await?;
        }
        Ok(out)
    }

    /// [`IdbStore::get_shards`] in order until the bytes found would pass `budget`: the shard
    /// that would pass it and those after it are neither read nor hashed, and are left out of
    /// the list returned (which is then shorter than `ids`). A shard written as an array (by
    /// an earlier version) is read whole to learn its length, a few ahead.
    pub async fn get_shards_within(
        &self,
        ids: &[ShardId],
        budget: usize,
    ) -> Result<Vec<Option<Bytes>>, NodeError> {
        /// Reads asked of the database before the first of them is answered.
        const AHEAD: usize = 4;
        let tx = self.tx(&[SHARDS], TransactionMode::Readonly)?;
        let store = tx.object_store(SHARDS).map_err(storage)?;
        let (mut asked, mut pending) = (0, std::collections::VecDeque::with_capacity(AHEAD));
        let (mut found, mut used) = (Vec::new(), 0u64);
        loop {
            while pending.len() < AHEAD && asked < ids.len() {
                let key = ids[asked].to_string();
                pending.push_back(store.get::<JsValue, _, _>(key).primitive().map_err(storage)?);
                asked += 1;
            }
            let Some(request) = pending.pop_front() else { break };
            let Some(value) = Stored::of(request.await.map_err(storage)?) else {
                found.push(None);
                continue;
            };
            used += value.len();
            if used > budget as u64 {
                break;
            }
            found.push(Some(value));
        }
        drop(pending);
        drop(tx);
        let mut corrupt = Vec::new();
        let read = read_in_order(found).await;
        let out = ids
            .iter()
            .zip(read)
            .map(|(id, bytes)| checked(*id, bytes?, &mut corrupt).map(VerifiedShard::into_bytes))
            .collect();
        if !corrupt.is_empty() {
            self.delete_shards(&corrupt).await?;
        }
        Ok(out)
    }

    /// Which of these shards are held.
    pub async fn has_shards(&self, ids: &[ShardId]) -> Result<Vec<bool>, NodeError> {
        let tx = self.tx(&[SHARDS], TransactionMode::Readonly)?;
        let store = tx.object_store(SHARDS).map_err(storage)?;
        let requests = ids
            .iter()
            .map(|id| store.count().with_query(id.to_string()).primitive().map_err(storage))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for request in requests {
            out.push(request.await.map_err(storage)? > 0);
        }
        Ok(out)
    }

    /// Deletes shards, keeping the byte count exact; returns the bytes freed. Over the
    /// browser's quota they go all the same (see [`Count::Dropped`]).
    pub async fn delete_shards(&self, ids: &[ShardId]) -> Result<u64, NodeError> {
        Count::or_dropped(|count| self.delete_shards_counting(ids, count)).await
    }

    async fn delete_shards_counting(
        &self,
        ids: &[ShardId],
        count: Count,
    ) -> Result<u64, NodeError> {
        let tx = self.tx(&[SHARDS, META], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let store = tx.object_store(SHARDS).map_err(storage)?;
        let meta = tx.object_store(META).map_err(storage)?;
        let freed = delete_counted(&store, &meta, ids, count).await?;
        commit(tx, &raw).await?;
        Ok(freed)
    }

    /// Bytes of shards held, and how many shards.
    pub async fn usage(&self) -> Result<(u64, u64), NodeError> {
        let tx = self.tx(&[SHARDS, META], TransactionMode::Readonly)?;
        let meta = tx.object_store(META).map_err(storage)?;
        let shards = tx.object_store(SHARDS).map_err(storage)?;
        let bytes = read_bytes(&meta, &shards).await?;
        let count = shards.count().primitive().map_err(storage)?.await.map_err(storage)?;
        Ok((bytes, u64::from(count)))
    }

    /// Stores a manifest's bytes under its id.
    pub async fn put_manifest(&self, id: ManifestId, bytes: &[u8]) -> Result<(), NodeError> {
        self.put_value(MANIFESTS, &id.to_string(), Uint8Array::from(bytes).into()).await
    }

    /// A manifest's bytes, if held.
    pub async fn get_manifest(&self, id: ManifestId) -> Result<Option<Bytes>, NodeError> {
        let value = self.get_value(MANIFESTS, &id.to_string()).await?;
        Ok(value.and_then(|v| v.dyn_into::<Uint8Array>().ok()).map(|a| Bytes::from(a.to_vec())))
    }

    /// The ids of every manifest held.
    pub async fn manifest_ids(&self) -> Result<Vec<ManifestId>, NodeError> {
        let keys = self.keys(MANIFESTS).await?;
        Ok(keys.iter().filter_map(|k| k.parse().ok()).collect())
    }

    /// Deletes a manifest.
    pub async fn delete_manifest(&self, id: ManifestId) -> Result<(), NodeError> {
        self.delete_value(MANIFESTS, &id.to_string()).await
    }

    /// Records a file in "my files".
    pub async fn put_file(&self, record: &FileRecord) -> Result<(), NodeError> {
        let value = serde_wasm_bindgen::to_value(record)
            .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
        self.put_value(FILES, &record.manifest_id, value).await
    }

    /// Every file in "my files".
    pub async fn files(&self) -> Result<Vec<FileRecord>, NodeError> {
        let values = self.values(FILES).await?;
        Ok(values.into_iter().filter_map(|v| serde_wasm_bindgen::from_value(v).ok()).collect())
    }

    /// A file in "my files".
    pub async fn file(&self, manifest_id: &str) -> Result<Option<FileRecord>, NodeError> {
        let value = self.get_value(FILES, manifest_id).await?;
        Ok(value.and_then(|v| serde_wasm_bindgen::from_value(v).ok()))
    }

    /// Removes a file from "my files".
    pub async fn delete_file(&self, manifest_id: &str) -> Result<(), NodeError> {
        self.delete_value(FILES, manifest_id).await
    }

    /// Stores an unfinished transfer's state (a structured-cloneable object).
    pub async fn put_transfer(&self, id: &str, state: JsValue) -> Result<(), NodeError> {
        self.put_value(TRANSFERS, id, state).await
    }

    /// [`IdbStore::put_transfer`] with the manifest the transfer needs, in one transaction.
    pub async fn put_transfer_with(
        &self,
        id: &str,
        state: JsValue,
        (manifest, bytes): (ManifestId, &[u8]),
    ) -> Result<(), NodeError> {
        let tx = self.tx(&[TRANSFERS, MANIFESTS], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let manifests = tx.object_store(MANIFESTS).map_err(storage)?;
        let value = JsValue::from(Uint8Array::from(bytes));
        manifests.put(value).with_key(manifest.to_string()).primitive().map_err(storage)?;
        let transfers = tx.object_store(TRANSFERS).map_err(storage)?;
        transfers.put(state).with_key(id.to_owned()).primitive().map_err(storage)?;
        commit(tx, &raw).await
    }

    /// An unfinished transfer's state.
    pub async fn transfer(&self, id: &str) -> Result<Option<JsValue>, NodeError> {
        self.get_value(TRANSFERS, id).await
    }

    /// Every unfinished transfer's state.
    pub async fn transfers(&self) -> Result<Vec<JsValue>, NodeError> {
        self.values(TRANSFERS).await
    }

    /// Forgets a transfer, its recorded stripes and its notes of the shards it added.
    pub async fn delete_transfer(&self, id: &str) -> Result<(), NodeError> {
        self.finish_transfer(id, None, None).await
    }

    /// [`IdbStore::delete_transfer`], listing `file` (if any) in the same transaction, with
    /// its manifest's bytes if given (an upload's, written only once its relays have taken
    /// it): a finished transfer is never seen both listed and unfinished, nor a manifest held
    /// for a file that is not listed.
    pub async fn finish_transfer(
        &self,
        id: &str,
        file: Option<&FileRecord>,
        manifest: Option<&[u8]>,
    ) -> Result<(), NodeError> {
        let tx = self.tx(&[TRANSFERS, STRIPES, FILES, MANIFESTS], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        if let Some(file) = file {
            if let Some(bytes) = manifest {
                let manifests = tx.object_store(MANIFESTS).map_err(storage)?;
                let value = JsValue::from(Uint8Array::from(bytes));
                manifests
                    .put(value)
                    .with_key(file.manifest_id.clone())
                    .primitive()
                    .map_err(storage)?;
            }
            let value = serde_wasm_bindgen::to_value(file)
                .map_err(|e| NodeError::Storage { detail: e.to_string() })?;
            let files = tx.object_store(FILES).map_err(storage)?;
            files.put(value).with_key(file.manifest_id.clone()).primitive().map_err(storage)?;
        }
        let transfers = tx.object_store(TRANSFERS).map_err(storage)?;
        transfers.delete(id.to_owned()).primitive().map_err(storage)?;
        delete_notes(&tx.object_store(STRIPES).map_err(storage)?, id)?;
        commit(tx, &raw).await
    }

    /// Forgets a listed file or an unfinished transfer, and deletes the shards it leaves that
    /// nothing kept here still needs, in one transaction: another tab's write lands wholly
    /// before it (and what that write needs is seen) or wholly after it (and puts back any
    /// shard it needs). Returns the bytes of shards freed. A file not listed here is refused
    /// ([`NodeError::NotKept`]) before anything is written.
    ///
    /// Still needed: the shards of every file listed but the one going, of every unfinished
    /// download but the one going (through its manifest; a download of the file being removed
    /// counts), and those every other unfinished transfer recorded or noted as used (see
    /// [`IdbStore::put_transfer_shards`]). Files of the same shard length can share a shard
    /// (a data shard of zero padding, say): it goes with the last of them. Over the browser's
    /// quota it deletes all the same, dropping the count of bytes held (see [`Count`]).
    pub async fn forget(&self, what: Forget<'_>) -> Result<u64, NodeError> {
        Count::or_dropped(|count| self.forget_counting(what, count)).await
    }

    async fn forget_counting(&self, what: Forget<'_>, count: Count) -> Result<u64, NodeError> {
        let stores = [SHARDS, MANIFESTS, FILES, TRANSFERS, STRIPES, META];
        let tx = self.tx(&stores, TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let [shards, manifests, files, transfers, stripes, meta] =
            stores.map(|name| tx.object_store(name).map_err(storage));
        let (shards, manifests, files) = (shards?, manifests?, files?);
        let (transfers, stripes, meta) = (transfers?, stripes?, meta?);
        let listed = files.get_all_keys::<String>().primitive().map_err(storage)?;
        let running = transfers.get_all_keys::<String>().primitive().map_err(storage)?;
        // Transfer ids are ASCII letters, digits, `-` and `_`: every key sorts before `~`.
        let notes = read_stripe_records(&stripes, (String::new(), "~".into())).await?;
        let listed: Vec<String> = listed.await.map_err(storage)?.filter_map(Result::ok).collect();
        let running: Vec<String> = running.await.map_err(storage)?.filter_map(Result::ok).collect();

        let (going_file, going_transfer) = match what {
            Forget::File(id) if !listed.contains(&id.to_string()) => {
                return Err(NodeError::NotKept { id: id.to_string() });
            }
            Forget::File(id) => (Some(id), None),
            Forget::Transfer { id, .. } => (None, Some(id)),
        };
        let candidates: Vec<ShardId> = match what {
            Forget::File(id) => {
                let read = read_manifests(&manifests, &[id]).await?;
                read.into_iter().flat_map(|m| m.shard_ids().to_vec()).collect()
            }
            Forget::Transfer { id, kept_here: true } => {
                // What each write noted it added; an upload's record from before transfers
                // noted them falls back to its recorded stripes.
                let mine = |prefix: String| {
                    let notes = notes.iter().filter(move |(key, _)| key.starts_with(&prefix));
                    notes.map(|(_, ids)| ids)
                };
                let noted = mine(added_prefix(id)).next().is_some();
                let from = if noted { added_prefix(id) } else { format!("{id}/") };
                let mut candidates: Vec<ShardId> = mine(from).flatten().copied().collect();
                // A download of a file no longer listed (removed while it ran) leaves every
                // shard of the file that nothing else needs: this browser holds no shard but
                // for its own files and transfers.
                if let Some(m) = id.strip_prefix("down-")
                    && !listed.iter().any(|l| l == m)
                    && let Ok(m) = m.parse::<ManifestId>()
                {
                    let read = read_manifests(&manifests, &[m]).await?;
                    candidates.extend(read.iter().flat_map(|m| m.shard_ids().iter().copied()));
                }
                candidates
            }
            Forget::Transfer { kept_here: false, .. } => Vec::new(),
        };

        let mut freed = 0u64;
        if !candidates.is_empty() {
            let mut needed_files: Vec<ManifestId> = listed
                .iter()
                .filter_map(|m| m.parse::<ManifestId>().ok())
                .filter(|m| Some(*m) != going_file)
                .collect();
            let downloads = running.iter().filter(|t| Some(t.as_str()) != going_transfer);
            needed_files.extend(
                downloads.filter_map(|t| t.strip_prefix("down-")?.parse::<ManifestId>().ok()),
            );
            needed_files.sort();
            needed_files.dedup();
            let mut needed: HashSet<ShardId> = read_manifests(&manifests, &needed_files)
                .await?
                .iter()
                .flat_map(|m| m.shard_ids().iter().copied())
                .collect();
            for (key, ids) in &notes {
                if let Some(owner) = user_of(key)
                    && Some(owner) != going_transfer
                {
                    needed.extend(ids.iter().copied());
                }
            }
            let mut unused = HashSet::new();
            let unused: Vec<ShardId> = candidates
                .into_iter()
                .filter(|id| !needed.contains(id) && unused.insert(*id))
                .collect();
            freed = delete_counted(&shards, &meta, &unused, count).await?;
        }

        // The records go in the same transaction. A manifest stays while a listed file or an
        // unfinished download still needs it.
        let manifest_going = match what {
            Forget::File(id) => {
                files.delete(id.to_string()).primitive().map_err(storage)?;
                let downloading = running.contains(&format!("down-{id}"));
                (!downloading).then_some(id)
            }
            Forget::Transfer { id, .. } => {
                transfers.delete(id.to_owned()).primitive().map_err(storage)?;
                delete_notes(&stripes, id)?;
                let download = id.strip_prefix("down-");
                download.filter(|m| !listed.iter().any(|l| l == m)).and_then(|m| m.parse().ok())
            }
        };
        if let Some(id) = manifest_going {
            manifests.delete(id.to_string()).primitive().map_err(storage)?;
        }
        commit(tx, &raw).await?;
        Ok(freed)
    }

    /// Records the shard ids of stripe `stripe` of an upload.
    pub async fn put_stripe(
        &self,
        transfer: &str,
        stripe: u64,
        ids: &[ShardId],
    ) -> Result<(), NodeError> {
        self.put_stripes(transfer, &[(stripe, ids.to_vec())]).await
    }

    /// Records the shard ids of several stripes of an upload, in one transaction.
    pub async fn put_stripes(
        &self,
        transfer: &str,
        stripes: &[(u64, Vec<ShardId>)],
    ) -> Result<(), NodeError> {
        let tx = self.tx(&[STRIPES], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let store = tx.object_store(STRIPES).map_err(storage)?;
        for (stripe, ids) in stripes {
            let bytes: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
            let key = format!("{transfer}/{stripe:016x}");
            store
                .put(JsValue::from(Uint8Array::from(&bytes[..])))
                .with_key(key)
                .primitive()
                .map_err(storage)?;
        }
        commit(tx, &raw).await
    }

    /// The recorded stripes of an upload, in order: each stripe's index and shard ids.
    pub async fn stripes(&self, transfer: &str) -> Result<Vec<(u64, Vec<ShardId>)>, NodeError> {
        let records = self.stripe_records(stripe_range(transfer)).await?;
        Ok(records
            .into_iter()
            .filter_map(|(key, ids)| {
                let index = key.rsplit('/').next()?;
                Some((u64::from_str_radix(index, 16).ok()?, ids))
            })
            .collect())
    }

    /// The records of `STRIPES` with keys in `from..to`: each key and the ids its value lists.
    async fn stripe_records(
        &self,
        range: (String, String),
    ) -> Result<Vec<(String, Vec<ShardId>)>, NodeError> {
        let tx = self.tx(&[STRIPES], TransactionMode::Readonly)?;
        read_stripe_records(&tx.object_store(STRIPES).map_err(storage)?, range).await
    }

    async fn put_value(&self, store: &str, key: &str, value: JsValue) -> Result<(), NodeError> {
        let tx = self.tx(&[store], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let object_store = tx.object_store(store).map_err(storage)?;
        object_store.put(value).with_key(key.to_owned()).primitive().map_err(storage)?;
        commit(tx, &raw).await
    }

    async fn get_value(&self, store: &str, key: &str) -> Result<Option<JsValue>, NodeError> {
        let tx = self.tx(&[store], TransactionMode::Readonly)?;
        let object_store = tx.object_store(store).map_err(storage)?;
        let request = object_store.get::<JsValue, _, _>(key.to_owned()).primitive();
        request.map_err(storage)?.await.map_err(storage)
    }

    async fn delete_value(&self, store: &str, key: &str) -> Result<(), NodeError> {
        let tx = self.tx(&[store], TransactionMode::Readwrite)?;
        let raw = raw_tx(&tx);
        let object_store = tx.object_store(store).map_err(storage)?;
        object_store.delete(key.to_owned()).primitive().map_err(storage)?;
        commit(tx, &raw).await
    }

    async fn keys(&self, store: &str) -> Result<Vec<String>, NodeError> {
        let tx = self.tx(&[store], TransactionMode::Readonly)?;
        let object_store = tx.object_store(store).map_err(storage)?;
        let keys = object_store.get_all_keys::<String>().primitive().map_err(storage)?;
        Ok(keys.await.map_err(storage)?.filter_map(Result::ok).collect())
    }

    async fn values(&self, store: &str) -> Result<Vec<JsValue>, NodeError> {
        let tx = self.tx(&[store], TransactionMode::Readonly)?;
        let object_store = tx.object_store(store).map_err(storage)?;
        let values = object_store.get_all::<JsValue>().primitive().map_err(storage)?;
        Ok(values.await.map_err(storage)?.filter_map(Result::ok).collect())
    }
}

/// What [`IdbStore::forget`] takes away.
#[derive(Debug, Clone, Copy)]
pub enum Forget<'a> {
    /// A listed file: its record, its manifest and its shards (a file not listed is refused).
    File(ManifestId),
    /// An unfinished transfer: its record and notes, and, when it kept shards here
    /// (`kept_here`), the shards it added.
    Transfer { id: &'a str, kept_here: bool },
}

type Store<'a> = indexed_db_futures::object_store::ObjectStore<'a>;

/// The records of `STRIPES` with keys in `from..to`: each key and the ids its value lists.
async fn read_stripe_records(
    store: &Store<'_>,
    (from, to): (String, String),
) -> Result<Vec<(String, Vec<ShardId>)>, NodeError> {
    let range = |(from, to): (String, String)| KeyRange::Bound(from, false, to, false);
    let keys = store
        .get_all_keys::<String>()
        .with_query::<String, _>(range((from.clone(), to.clone())))
        .primitive()
        .map_err(storage)?;
    let values = store.get_all::<JsValue>().with_query::<String, _>(range((from, to))).primitive();
    let (keys, values) = (keys.await.map_err(storage)?, values.map_err(storage)?.await);
    let mut out = Vec::new();
    for (key, value) in keys.zip(values.map_err(storage)?) {
        let (Ok(key), Ok(value)) = (key, value) else { continue };
        let Ok(bytes) = value.dyn_into::<Uint8Array>() else { continue };
        let ids = bytes
            .to_vec()
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok().map(ShardId))
            .collect();
        out.push((key, ids));
    }
    Ok(out)
}

/// What a removal does with the count of bytes held.
#[derive(Debug, Clone, Copy)]
enum Count {
    /// Takes the bytes freed off it.
    Kept,
    /// Drops it, to be counted again shard by shard when next read ([`count_bytes`]): over
    /// the browser's quota, a transaction that writes anything at all fails, one that only
    /// deletes does not, and a full store must still be able to free what it holds.
    Dropped,
}

impl Count {
    /// Runs `removal` (one transaction) keeping the count and, if the browser's quota refuses
    /// it, once more dropping the count.
    async fn or_dropped<T, F>(removal: impl Fn(Count) -> F) -> Result<T, NodeError>
    where
        F: std::future::Future<Output = Result<T, NodeError>>,
    {
        match removal(Count::Kept).await {
            Err(NodeError::QuotaExceeded { .. }) => removal(Count::Dropped).await,
            done => done,
        }
    }
}

/// Deletes the shards among `ids` that are held, and takes their bytes off the count (or
/// drops it: see [`Count`]), in the transaction of `shards` and `meta`; returns the bytes
/// freed. A repeated id counts once.
async fn delete_counted(
    shards: &Store<'_>,
    meta: &Store<'_>,
    ids: &[ShardId],
    count: Count,
) -> Result<u64, NodeError> {
    // Read before the deletes: a count made shard by shard after them would not hold them.
    let used = match count {
        Count::Kept => Some(read_bytes(meta, shards).await?),
        Count::Dropped => None,
    };
    let keys: HashSet<String> = ids.iter().map(ShardId::to_string).collect();
    let found = keys
        .iter()
        .map(|key| shards.get::<JsValue, _, _>(key.clone()).primitive().map_err(storage))
        .collect::<Result<Vec<_>, _>>()?;
    let mut freed = 0u64;
    for (key, found) in keys.into_iter().zip(found) {
        if let Some(value) = found.await.map_err(storage)? {
            freed += value_len(&value).unwrap_or(0);
            shards.delete(key).primitive().map_err(storage)?;
        }
    }
    match used {
        Some(used) => {
            let used = JsValue::from(used.saturating_sub(freed) as f64);
            meta.put(used).with_key(BYTES_KEY).primitive().map_err(storage)?;
        }
        None => {
            meta.delete(BYTES_KEY).primitive().map_err(storage)?;
        }
    }
    Ok(freed)
}

/// A stored shard's bytes checked against its id; one that fails is noted in `corrupt` (to
/// be deleted) and counts as absent. One whose `Blob` the browser could not read counts as
/// absent and stays: a failed read proves nothing about the bytes.
fn checked(
    id: ShardId,
    bytes: Result<Vec<u8>, JsValue>,
    corrupt: &mut Vec<ShardId>,
) -> Option<VerifiedShard> {
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => {
            let error = crate::error::describe(&e);
            tracing::warn!(shard = %id, %error, "a stored shard could not be read");
            return None;
        }
    };
    match VerifiedShard::check(id, Bytes::from(bytes)) {
        Ok(shard) => Some(shard),
        Err(_) => {
            tracing::warn!(shard = %id, "a stored shard failed its hash and is dropped");
            corrupt.push(id);
            None
        }
    }
}

/// The manifests among `ids` that are held and valid.
async fn read_manifests(store: &Store<'_>, ids: &[ManifestId]) -> Result<Vec<Manifest>, NodeError> {
    let requests = ids
        .iter()
        .map(|id| store.get::<JsValue, _, _>(id.to_string()).primitive().map_err(storage))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, request) in ids.iter().zip(requests) {
        let found = request.await.map_err(storage)?;
        let bytes = found.and_then(|v| v.dyn_into::<Uint8Array>().ok()).map(|a| a.to_vec());
        if let Some(manifest) = bytes.and_then(|b| Manifest::decode_as(id, &b).ok()) {
            out.push(manifest);
        }
    }
    Ok(out)
}

/// Deletes a transfer's recorded stripes and its notes.
fn delete_notes(stripes: &Store<'_>, transfer: &str) -> Result<(), NodeError> {
    let ranges = [
        stripe_range(transfer),
        prefix_range(added_prefix(transfer)),
        prefix_range(uses_prefix(transfer)),
    ];
    for (from, to) in ranges {
        stripes
            .delete::<String, _>(KeyRange::Bound(from, false, to, false))
            .primitive()
            .map_err(storage)?;
    }
    Ok(())
}

/// The transfer that a `STRIPES` record shows using shards: an upload's recorded stripe
/// (`<id>/<stripe>`) or a write's note of every shard it used (`<id>#uses/<part>`), not a note
/// of what a write added.
fn user_of(key: &str) -> Option<&str> {
    let (owner, rest) = key.split_once('/')?;
    let transfer = owner.strip_suffix("#uses").unwrap_or(owner);
    (!transfer.contains('#') && !rest.contains('/')).then_some(transfer)
}

/// The key range of one transfer's stripes.
fn stripe_range(transfer: &str) -> (String, String) {
    prefix_range(format!("{transfer}/"))
}

/// The range of the keys that start with `prefix` (followed by hex digits).
fn prefix_range(prefix: String) -> (String, String) {
    let end = format!("{prefix}~");
    (prefix, end)
}

/// The prefix of the keys under which a transfer notes the shards each of its writes added,
/// apart from an upload's recorded stripes (`#` sorts before `/`).
fn added_prefix(transfer: &str) -> String {
    format!("{transfer}#added/")
}

/// The prefix of the keys under which a transfer notes every shard each of its writes put
/// here, added or held before.
fn uses_prefix(transfer: &str) -> String {
    format!("{transfer}#uses/")
}

async fn read_bytes(meta: &Store<'_>, shards: &Store<'_>) -> Result<u64, NodeError> {
    let value = meta.get::<JsValue, _, _>(BYTES_KEY).primitive().map_err(storage)?;
    match value.await.map_err(storage)?.and_then(|v| v.as_f64()) {
        Some(bytes) => Ok(bytes as u64),
        None => count_bytes(shards).await,
    }
}

/// The bytes of every shard held, counted one by one: for a store without a count (a new one,
/// or one whose count a removal over the browser's quota dropped: see [`delete_counted`]).
/// A `Blob`'s size is known without reading it.
async fn count_bytes(shards: &Store<'_>) -> Result<u64, NodeError> {
    let Some(mut cursor) = shards.open_cursor().await.map_err(storage)? else {
        return Ok(0);
    };
    let mut bytes = 0;
    while let Some(value) = cursor.next_record::<JsValue>().await.map_err(storage)? {
        bytes += value_len(&value).unwrap_or(0);
    }
    Ok(bytes)
}

/// The browser's own transaction object, whose `error` says why it aborted.
fn raw_tx(tx: &Transaction<'_>) -> web_sys::IdbTransaction {
    tx.as_sys().clone().unchecked_into()
}

/// Commits, turning an abort for quota into [`NodeError::QuotaExceeded`].
async fn commit(tx: Transaction<'_>, raw: &web_sys::IdbTransaction) -> Result<(), NodeError> {
    match tx.commit().await {
        Ok(()) => Ok(()),
        Err(e) => Err(match raw.error() {
            Some(dom) if dom.name() == "QuotaExceededError" => {
                let message = dom.message();
                let detail = if message.is_empty() {
                    "the browser's quota for this site is reached".to_owned()
                } else {
                    message
                };
                NodeError::QuotaExceeded { detail }
            }
            Some(dom) => {
                NodeError::Storage { detail: format!("{}: {}", dom.name(), dom.message()) }
            }
            None => storage(e),
        }),
    }
}

/// A storage error, telling quota apart from the rest.
fn storage(e: impl Into<indexed_db_futures::error::Error>) -> NodeError {
    let e: indexed_db_futures::error::Error = e.into();
    let text = e.to_string();
    if text.contains("QuotaExceeded") {
        NodeError::QuotaExceeded { detail: text }
    } else {
        NodeError::Storage { detail: text }
    }
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    impl IdbStore {
        /// The shards transfer `transfer` noted it added, or `None` when it noted none.
        async fn added_shards(&self, transfer: &str) -> Option<Vec<ShardId>> {
            let notes = self.stripe_records(prefix_range(added_prefix(transfer))).await.unwrap();
            (!notes.is_empty()).then(|| notes.into_iter().flat_map(|(_, ids)| ids).collect())
        }

        /// The shards unfinished transfers use, each with the transfer using it.
        async fn transfer_shards(&self) -> Vec<(String, Vec<ShardId>)> {
            let records = self.stripe_records((String::new(), "~".into())).await.unwrap();
            let used =
                records.into_iter().filter_map(|(key, ids)| Some((user_of(&key)?.into(), ids)));
            used.collect()
        }
    }

    /// A file of `len` bytes coded at k = 10, m = 2 (files of one length share their zero
    /// padding shards): its manifest and its shards.
    fn coded(len: usize) -> (Manifest, Vec<(ShardId, Bytes)>) {
        use shardweb_core::FileMeta;
        use shardweb_core::codec::{Encoder, FileId, FileKey, Params};
        use shardweb_core::manifest::SigningKey;
        let key = FileKey::generate().unwrap();
        let params = Params::new(10, 2).unwrap();
        let mut encoder = Encoder::new(params, &key, FileId::generate().unwrap());
        let data = vec![7u8; len];
        assert!(encoder.push(&mut &data[..]).unwrap().is_none());
        let (stripe, encoded) = encoder.finish().unwrap();
        let meta = FileMeta { name: "f".into(), mime: String::new() };
        let manifest =
            Manifest::create(&encoded, &meta, &key, &SigningKey::from_bytes(&[7; 32])).unwrap();
        (manifest, stripe.ids.into_iter().zip(stripe.shards).collect())
    }

    /// Holds a file: its shards, its manifest, and its record when `listed`.
    async fn hold(
        store: &IdbStore,
        (manifest, shards): &(Manifest, Vec<(ShardId, Bytes)>),
        listed: bool,
    ) {
        store.put_own_shards(shards).await.unwrap();
        store.put_manifest(manifest.id(), manifest.bytes()).await.unwrap();
        if listed {
            let record = FileRecord {
                manifest_id: manifest.id().to_string(),
                link: String::new(),
                name: "f".into(),
                mime: String::new(),
                size: 1.0,
                origin: "uploaded".into(),
                added: 0.0,
            };
            store.put_file(&record).await.unwrap();
        }
    }

    async fn held(store: &IdbStore, shards: &[(ShardId, Bytes)]) -> usize {
        let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
        store.has_shards(&ids).await.unwrap().into_iter().filter(|h| *h).count()
    }

    /// Forgetting a file or a transfer takes what it leaves and nothing another needs: a
    /// shard two files share stays with the second; a download of a removed file keeps its
    /// shards and manifest until it is cancelled, which then takes them; a running upload's
    /// shards stay; the byte count follows.
    #[wasm_bindgen_test]
    async fn forgetting_takes_only_what_nothing_else_needs() {
        let name = format!("shardweb-test-forget-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        let (a, b) = (coded(1), coded(1));
        let shared: Vec<ShardId> =
            a.1.iter().map(|(id, _)| *id).filter(|id| b.1.iter().any(|(o, _)| o == id)).collect();
        assert!(!shared.is_empty(), "files of one length share their zero padding");
        hold(&store, &a, true).await;
        hold(&store, &b, true).await;
        let (bytes, _) = store.usage().await.unwrap();

        // A download of `a` runs, and an upload uses one of `a`'s own shards.
        let (ma, mb) = (a.0.id(), b.0.id());
        store.put_transfer(&format!("down-{ma}"), JsValue::from(1)).await.unwrap();
        store.put_transfer("up-1", JsValue::from(1)).await.unwrap();
        let own = a.1.iter().find(|(id, _)| !shared.contains(id)).unwrap().clone();
        store.put_transfer_shards("up-1", 0, std::slice::from_ref(&own)).await.unwrap();
        // It recorded that stripe too: its note of what it added (nothing) is what counts.
        store.put_stripe("up-1", 0, &[own.0]).await.unwrap();

        // Removing `a` while it downloads takes nothing but its record.
        assert_eq!(store.forget(Forget::File(ma)).await.unwrap(), 0);
        assert!(store.file(&ma.to_string()).await.unwrap().is_none());
        assert!(store.get_manifest(ma).await.unwrap().is_some());
        assert_eq!(held(&store, &a.1).await, a.1.len());
        // Removing it again is refused, and changes nothing.
        let again = store.forget(Forget::File(ma)).await;
        assert!(matches!(again, Err(NodeError::NotKept { .. })), "{again:?}");
        assert!(store.get_manifest(ma).await.unwrap().is_some());

        // Cancelling that download takes `a`'s shards but the shared ones and the one the
        // upload uses, and its manifest.
        let down = format!("down-{ma}");
        let freed = store.forget(Forget::Transfer { id: &down, kept_here: true }).await.unwrap();
        assert_eq!(held(&store, &a.1).await, shared.len() + 1);
        assert!(store.get_manifest(ma).await.unwrap().is_none());
        assert_eq!(store.usage().await.unwrap().0, bytes - freed);
        assert!(freed > 0);

        // Cancelling the upload takes the shard it added (none: it was held) and keeps `b`'s.
        assert_eq!(
            store.forget(Forget::Transfer { id: "up-1", kept_here: true }).await.unwrap(),
            0
        );
        assert_eq!(held(&store, &a.1).await, shared.len() + 1);
        assert!(store.transfer("up-1").await.unwrap().is_none());
        assert!(store.transfer_shards().await.is_empty());

        // Removing `b` takes every shard left but `a`'s orphan, then nothing is listed.
        store.forget(Forget::File(mb)).await.unwrap();
        assert_eq!(held(&store, &b.1).await, 0);
        assert!(store.get_manifest(mb).await.unwrap().is_none());
        assert_eq!(store.usage().await.unwrap(), (own.1.len() as u64, 1));
        store.close();
    }

    /// Shards are read in order until the next would pass the budget; an absent one takes
    /// none of it.
    #[wasm_bindgen_test]
    async fn reads_stop_where_the_budget_ends() {
        let name = format!("shardweb-test-within-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        let [a, b, c, d, e, f] = [1, 2, 3, 4, 5, 6].map(shard);
        store.put_shards(&[a.clone(), c.clone(), d.clone(), e.clone(), f.clone()]).await.unwrap();
        let ids = [a.0, b.0, c.0, d.0, e.0, f.0];
        let found = store.get_shards_within(&ids, 2999).await.unwrap();
        assert_eq!(found, [Some(a.1.clone()), None, Some(c.1.clone())]);
        let found = store.get_shards_within(&ids, 5000).await.unwrap();
        assert_eq!(found.len(), 6);
        assert_eq!(found[5], Some(f.1.clone()));
        assert!(store.get_shards_within(&ids, 999).await.unwrap().is_empty());
        store.close();
    }

    /// Shards are stored as `Blob`s; a shard an earlier version stored as a `Uint8Array` is
    /// still read, served within a budget, counted and freed; a stored shard whose bytes do
    /// not match its id, of either kind, is dropped on reading and its bytes uncounted.
    #[wasm_bindgen_test]
    async fn shards_of_either_value_kind_are_read_counted_and_dropped_when_corrupt() {
        let name = format!("shardweb-test-kinds-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        let [a, b, c] = [1, 2, 3].map(shard);
        store.put_shards(&[a.clone(), b.clone()]).await.unwrap();
        let raw = store.get_value(SHARDS, &a.0.to_string()).await.unwrap().unwrap();
        let blob = raw.dyn_into::<Blob>().expect("a shard is stored as a Blob");
        assert_eq!(blob.size() as usize, a.1.len());

        // As an earlier version wrote it: an array, counted in the byte total.
        let old = JsValue::from(Uint8Array::from(&c.1[..]));
        store.put_value(SHARDS, &c.0.to_string(), old).await.unwrap();
        // Two shards whose bytes are not theirs, one of each kind.
        let [d, e] = [4, 5].map(shard);
        let wrong = shard(9).1;
        store
            .put_value(SHARDS, &d.0.to_string(), shard_value(&wrong).unwrap().into())
            .await
            .unwrap();
        let wrong_array = JsValue::from(Uint8Array::from(&wrong[..]));
        store.put_value(SHARDS, &e.0.to_string(), wrong_array).await.unwrap();
        store.put_value(META, BYTES_KEY, JsValue::from(5000.0)).await.unwrap();
        assert_eq!(store.usage().await.unwrap(), (5000, 5));

        let ids = [a.0, b.0, c.0];
        let expected = vec![Some(a.1.clone()), Some(b.1.clone()), Some(c.1.clone())];
        assert_eq!(store.get_shards(&ids).await.unwrap(), expected);
        assert_eq!(store.get_shards_within(&ids, 3000).await.unwrap(), expected);
        assert_eq!(store.get_shards_within(&ids, 2999).await.unwrap(), expected[..2]);

        // A Blob the browser cannot read proves nothing against the shard: absent, kept.
        let mut corrupt = Vec::new();
        assert!(checked(a.0, Err(JsValue::from("NotReadableError")), &mut corrupt).is_none());
        assert!(corrupt.is_empty(), "an unreadable shard is not taken for a corrupt one");

        assert_eq!(store.get_shards(&[d.0, e.0]).await.unwrap(), [None, None]);
        assert_eq!(store.has_shards(&[d.0, e.0]).await.unwrap(), [false, false]);
        assert_eq!(store.usage().await.unwrap(), (3000, 3));
        assert_eq!(store.delete_shards(&[a.0, c.0]).await.unwrap(), 2000);
        assert_eq!(store.usage().await.unwrap(), (1000, 1));
        store.close();
    }

    /// A store without a count of its bytes (new, or after a removal over the browser's quota
    /// dropped it) counts its shards one by one, of either value kind, when next it needs the
    /// count, and writes after it keep it exact. A removal that drops the count still frees.
    #[wasm_bindgen_test]
    async fn a_dropped_byte_count_is_counted_again_from_the_shards() {
        let name = format!("shardweb-test-count-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        assert_eq!(store.usage().await.unwrap(), (0, 0));
        let [a, b, c, d] = [1, 2, 3, 4].map(shard);
        store.put_shards(&[a.clone(), b.clone()]).await.unwrap();
        let old = JsValue::from(Uint8Array::from(&c.1[..]));
        store.put_value(SHARDS, &c.0.to_string(), old).await.unwrap();
        // Dropped, the count is the shards' bytes, an array's among them.
        store.delete_value(META, BYTES_KEY).await.unwrap();
        assert_eq!(store.usage().await.unwrap(), (3000, 3));
        // A write counts from there, and writes the count again.
        store.put_shards(std::slice::from_ref(&d)).await.unwrap();
        assert!(store.get_value(META, BYTES_KEY).await.unwrap().is_some());
        assert_eq!(store.usage().await.unwrap(), (4000, 4));
        // A removal that drops the count frees its shards; the count comes back exact.
        let tx = store.tx(&[SHARDS, META], TransactionMode::Readwrite).unwrap();
        let raw = raw_tx(&tx);
        let (shards, meta) = (tx.object_store(SHARDS).unwrap(), tx.object_store(META).unwrap());
        assert_eq!(
            delete_counted(&shards, &meta, &[a.0, c.0], Count::Dropped).await.unwrap(),
            2000
        );
        drop((shards, meta));
        commit(tx, &raw).await.unwrap();
        assert!(store.get_value(META, BYTES_KEY).await.unwrap().is_none());
        assert_eq!(store.usage().await.unwrap(), (2000, 2));
        assert_eq!(store.delete_shards(&[b.0]).await.unwrap(), 1000);
        assert_eq!(store.usage().await.unwrap(), (1000, 1));
        store.close();
    }

    fn shard(seed: u8) -> (ShardId, Bytes) {
        let bytes: Vec<u8> = (0..1000).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        (ShardId::of(&bytes), Bytes::from(bytes))
    }

    /// An upload notes the shards it added, not those the store already held for another
    /// file; a run after a reload that writes the same stripe again adds to the note; the
    /// notes go with the upload's record.
    #[wasm_bindgen_test]
    async fn an_upload_notes_the_shards_it_added_and_only_those() {
        let name = format!("shardweb-test-added-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        let [a, b, c, d] = [1, 2, 3, 4].map(shard);
        store.put_own_shards(std::slice::from_ref(&a)).await.unwrap();
        assert_eq!(store.added_shards("up-1").await, None);

        let fresh = store.put_transfer_shards("up-1", 0, &[a.clone(), b.clone()]).await.unwrap();
        assert_eq!(fresh, [false, true]);
        store.put_transfer_shards("up-1", 1, std::slice::from_ref(&d)).await.unwrap();
        // After a reload, stripe 0 is written again with a shard it had not reached.
        store.put_transfer_shards("up-1", 0, &[b.clone(), c.clone()]).await.unwrap();
        let mut added = store.added_shards("up-1").await.unwrap();
        added.sort();
        let mut expected = vec![b.0, c.0, d.0];
        expected.sort();
        assert_eq!(added, expected);
        // Recorded stripes are apart from the notes.
        store.put_stripe("up-1", 0, &[a.0, b.0]).await.unwrap();
        assert_eq!(store.stripes("up-1").await.unwrap(), vec![(0, vec![a.0, b.0])]);
        assert_eq!(store.added_shards("up-2").await, None);

        store.delete_transfer("up-1").await.unwrap();
        assert_eq!(store.added_shards("up-1").await, None);
        assert!(store.stripes("up-1").await.unwrap().is_empty());
        store.close();
    }

    /// Every shard an unfinished transfer uses is listed with it: an upload's recorded
    /// stripes, and each write's shards, those held before among them; not the notes of what
    /// a write added. They go with the transfer.
    #[wasm_bindgen_test]
    async fn every_shard_a_transfer_uses_is_listed_with_it() {
        let name = format!("shardweb-test-transfer-shards-{}", js_sys::Math::random());
        let store = IdbStore::open(&name, None).await.unwrap();
        let [a, b, c] = [1, 2, 3].map(shard);
        store.put_stripes("up-1", &[(0, vec![a.0]), (17, vec![b.0, c.0])]).await.unwrap();
        store.put_stripe("up-2", 3, &[c.0]).await.unwrap();
        store.put_transfer_shards("up-1", 0, std::slice::from_ref(&a)).await.unwrap();
        // `a` is held already: this write uses it without adding it.
        store.put_transfer_shards("down-x_Y-z", 0, &[a.clone(), b.clone()]).await.unwrap();
        let mut all = store.transfer_shards().await;
        all.sort();
        let expected = [
            ("down-x_Y-z", vec![a.0, b.0]),
            ("up-1", vec![a.0]),
            ("up-1", vec![a.0]),
            ("up-1", vec![b.0, c.0]),
            ("up-2", vec![c.0]),
        ];
        assert_eq!(all, expected.map(|(t, ids)| (t.to_owned(), ids)));
        assert_eq!(store.stripes("up-1").await.unwrap(), [(0, vec![a.0]), (17, vec![b.0, c.0])]);
        assert_eq!(store.added_shards("down-x_Y-z").await, Some(vec![b.0]));
        store.delete_transfer("down-x_Y-z").await.unwrap();
        store.delete_transfer("up-1").await.unwrap();
        assert_eq!(store.transfer_shards().await, [("up-2".to_owned(), vec![c.0])]);
        store.close();
    }
}

//! The IndexedDB store in headless Chromium: batches, reads that verify, deletes, usage kept
//! exact across two connections (two tabs), persistence across reopening, and the quota path
//! that leaves nothing behind.
#![cfg(wasm_browser)]

use bytes::Bytes;
use shardweb_core::{ManifestId, ShardId};
use shardweb_wasm::error::NodeError;
use shardweb_wasm::idb_store::{FileRecord, IdbStore};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn shard(seed: u8, len: usize) -> (ShardId, Bytes) {
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    (ShardId::of(&bytes), Bytes::from(bytes))
}

/// A database of its own per test, so that tests do not see each other's data.
fn name(test: &str) -> String {
    format!("shardweb-test-{test}-{}", js_sys::Math::random())
}

/// Shards of one length, in batches one after another and in two at once, each keep their
/// own bytes (the store copies every value through one reused buffer).
#[wasm_bindgen_test]
async fn shards_of_one_length_keep_their_own_bytes() {
    let store = IdbStore::open(&name("one-length"), None).await.unwrap();
    let shards: Vec<_> = (0..16).map(|i| shard(i, 4096)).collect();
    store.put_shards(&shards[..4]).await.unwrap();
    store.put_shards(&shards[4..8]).await.unwrap();
    let (a, b) = futures::join!(store.put_shards(&shards[8..12]), store.put_shards(&shards[12..]));
    assert_eq!((a.unwrap(), b.unwrap()), (vec![true; 4], vec![true; 4]));
    let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
    let expected: Vec<_> = shards.iter().map(|(_, bytes)| Some(bytes.clone())).collect();
    assert_eq!(store.get_shards(&ids).await.unwrap(), expected);
}

#[wasm_bindgen_test]
async fn batches_are_stored_read_back_verified_and_deleted() {
    let store = IdbStore::open(&name("batches"), None).await.unwrap();
    let shards: Vec<_> = (0..16).map(|i| shard(i, 1000 + usize::from(i))).collect();
    assert_eq!(store.put_shards(&shards).await.unwrap(), vec![true; 16]);
    // Again: nothing new, nothing charged twice.
    assert_eq!(store.put_shards(&shards[..4]).await.unwrap(), vec![false; 4]);
    let total: u64 = shards.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(store.usage().await.unwrap(), (total, 16));
    // Held and new in one batch: each answered for itself, only the new one charged.
    let extra = shard(50, 700);
    let mixed = [shards[5].clone(), extra.clone(), shards[0].clone()];
    assert_eq!(store.put_shards(&mixed).await.unwrap(), [false, true, false]);
    assert_eq!(store.usage().await.unwrap(), (total + 700, 17));
    assert_eq!(store.delete_shards(&[extra.0]).await.unwrap(), 700);
    // One shard twice in a batch (a stripe's zero padding shards share an id): stored and
    // charged once.
    let twice = shard(60, 300);
    let batch = [twice.clone(), shards[1].clone(), twice.clone()];
    assert_eq!(store.put_shards(&batch).await.unwrap(), [true, false, false]);
    assert_eq!(store.usage().await.unwrap(), (total + 300, 17));
    assert_eq!(store.delete_shards(&[twice.0]).await.unwrap(), 300);
    assert_eq!(store.usage().await.unwrap(), (total, 16));

    let ids: Vec<ShardId> = shards.iter().map(|(id, _)| *id).collect();
    let (unknown, _) = shard(99, 10);
    let mut asked = ids.clone();
    asked.push(unknown);
    let got = store.get_shards(&asked).await.unwrap();
    for ((_, bytes), found) in shards.iter().zip(&got) {
        assert_eq!(found.as_ref(), Some(bytes));
    }
    assert_eq!(got.last(), Some(&None));
    assert_eq!(store.has_shards(&[ids[0], unknown]).await.unwrap(), [true, false]);

    let freed = store.delete_shards(&ids[..8]).await.unwrap();
    let expected: u64 = shards[..8].iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(freed, expected);
    assert_eq!(store.usage().await.unwrap(), (total - expected, 8));
    assert_eq!(store.has_shards(&ids[7..9]).await.unwrap(), [false, true]);
}

#[wasm_bindgen_test]
async fn a_shard_that_does_not_match_its_id_is_refused_whole() {
    let store = IdbStore::open(&name("mismatch"), None).await.unwrap();
    let good = shard(1, 100);
    let (id, _) = shard(2, 100);
    let bad = (id, Bytes::from_static(b"not those bytes"));
    assert!(matches!(store.put_shards(&[good.clone(), bad]).await, Err(NodeError::Corrupt { .. })));
    assert_eq!(store.has_shards(&[good.0]).await.unwrap(), [false]);
    assert_eq!(store.usage().await.unwrap(), (0, 0));
}

#[wasm_bindgen_test]
async fn data_survives_closing_and_reopening() {
    let db = name("reopen");
    let store = IdbStore::open(&db, None).await.unwrap();
    let s = shard(5, 5000);
    store.put_shards(std::slice::from_ref(&s)).await.unwrap();
    let manifest = ManifestId([7; 32]);
    store.put_manifest(manifest, b"manifest bytes").await.unwrap();
    let link: shardweb_core::Link = format!("{}.{}", manifest, "E".repeat(43)).parse().unwrap();
    let meta = shardweb_core::FileMeta { name: "a.txt".into(), mime: "text/plain".into() };
    store.put_file(&FileRecord::new(&link, &meta, 5, "uploaded")).await.unwrap();
    let other = ShardId([9; 32]);
    store.put_stripes("up-1", &[(3, vec![s.0, other]), (1, vec![other, s.0])]).await.unwrap();
    store.put_stripe("up-10", 0, &[s.0, s.0]).await.unwrap();
    store.close();

    let store = IdbStore::open(&db, None).await.unwrap();
    assert_eq!(store.get_shards(&[s.0]).await.unwrap(), [Some(s.1.clone())]);
    assert_eq!(
        store.get_manifest(manifest).await.unwrap().as_deref(),
        Some(&b"manifest bytes"[..])
    );
    assert_eq!(store.manifest_ids().await.unwrap(), [manifest]);
    let files = store.files().await.unwrap();
    assert_eq!(
        (files.len(), files[0].name.as_str(), files[0].origin.as_str()),
        (1, "a.txt", "uploaded")
    );
    assert_eq!(
        store.stripes("up-1").await.unwrap(),
        [(1, vec![other, s.0]), (3, vec![s.0, other])],
        "only this transfer's stripes, in order, each with its ids"
    );
    store.delete_transfer("up-1").await.unwrap();
    assert!(store.stripes("up-1").await.unwrap().is_empty());
    assert_eq!(store.stripes("up-10").await.unwrap().len(), 1);
}

#[wasm_bindgen_test]
async fn two_connections_writing_at_once_keep_the_count_exact() {
    let db = name("two-tabs");
    let (a, b) =
        (IdbStore::open(&db, None).await.unwrap(), IdbStore::open(&db, None).await.unwrap());
    let shards: Vec<_> = (0..12).map(|i| shard(i, 2000)).collect();
    // Overlapping batches from both "tabs" at once.
    let (ra, rb) = futures::join!(a.put_shards(&shards[..8]), b.put_shards(&shards[4..]));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let new = ra.iter().chain(&rb).filter(|n| **n).count();
    assert_eq!(new, 12, "each shard is new exactly once");
    assert_eq!(a.usage().await.unwrap(), (24_000, 12));
    assert_eq!(b.usage().await.unwrap(), (24_000, 12));
}

#[wasm_bindgen_test]
async fn over_the_limit_a_batch_is_refused_and_nothing_is_written() {
    let store = IdbStore::open(&name("quota"), Some(10_000)).await.unwrap();
    let first: Vec<_> = (0..2).map(|i| shard(i, 4000)).collect();
    store.put_shards(&first).await.unwrap();
    let second: Vec<_> = (2..4).map(|i| shard(i, 4000)).collect();
    match store.put_shards(&second).await {
        Err(NodeError::QuotaExceeded { detail }) => {
            assert_eq!(detail, "8000 + 8000 bytes is over this node's limit of 10000");
            assert_eq!(NodeError::QuotaExceeded { detail }.code(), "QUOTA_EXCEEDED");
        }
        other => panic!("expected the quota error, got {other:?}"),
    }
    let ids: Vec<ShardId> = second.iter().map(|(id, _)| *id).collect();
    assert_eq!(store.has_shards(&ids).await.unwrap(), [false, false]);
    assert_eq!(store.usage().await.unwrap(), (8000, 2));
}

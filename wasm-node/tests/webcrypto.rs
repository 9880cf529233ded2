//! WebCrypto's AES-GCM seals segments byte for byte as `core`'s reference does: the golden
//! encode comes out the same, and so do random segments; a wrong key or a flipped byte fails
//! to open with the opaque decrypt error.
#![cfg(wasm_browser)]

#[path = "../../core/tests/support/rng.rs"]
mod rng;

use rng::Rng;
use shardweb_core::codec::{
    Encoder, FileId, FileKey, Params, SealedSegment, SegmentCipher, ShardId,
};
use shardweb_wasm::error::NodeError;
use shardweb_wasm::webcrypto::WebSealer;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// BLAKE3 over every shard of core's golden encode (`core/tests/formats.rs`).
const SHARDS_DIGEST: &str = "ed5e82cb374e890b4cbec4135d14abc314a27670be5849749bae84b228d89a4e";

#[wasm_bindgen_test]
async fn the_golden_encode_sealed_by_webcrypto_matches() {
    let data = Rng::new(42).bytes(1000);
    let key = FileKey::from_bytes([0x11; 32]);
    let params = Params::new(3, 2).unwrap().with_segment_size(256).unwrap();
    let sealer = WebSealer::new(&key, FileId([0x22; 16])).await.unwrap();
    let mut encoder = Encoder::new(params, &key, FileId([0x22; 16]));
    let mut input = &data[..];
    let mut segments = Vec::new();
    while let Some(segment) = encoder.next_segment(&mut input).unwrap() {
        segments.push(segment);
    }
    segments.push(encoder.last_segment().unwrap());
    let mut all = blake3::Hasher::new();
    for segment in segments {
        let sealed = sealer.seal(segment.index, segment.last, segment.data).await.unwrap();
        let stripe = encoder.code_sealed(segment.index, sealed).unwrap();
        for (shard, id) in stripe.shards.iter().zip(&stripe.ids) {
            assert_eq!(*id, ShardId::of(shard));
            all.update(shard);
        }
    }
    assert_eq!(all.finalize().to_hex().as_str(), SHARDS_DIGEST);
    assert_eq!(encoder.into_encoded().unwrap().size, 1000);
}

#[wasm_bindgen_test]
async fn random_segments_seal_and_open_as_the_reference_does() {
    let mut rng = Rng::new(7);
    for (i, len) in [0usize, 1, 15, 16, 17, 1000, 65_536, 1 << 20].into_iter().enumerate() {
        let key = FileKey::from_bytes(rng.bytes(32).try_into().unwrap());
        let file_id = FileId(rng.bytes(16).try_into().unwrap());
        let data = rng.bytes(len);
        let (index, last) = (i as u64 * 7919, i % 2 == 0);
        let reference = SegmentCipher::new(&key, file_id);
        let mut expected = data.clone();
        reference.seal(index, last, &mut expected);
        let sealer = WebSealer::new(&key, file_id).await.unwrap();
        let sealed = sealer.seal(index, last, data.clone()).await.unwrap();
        assert_eq!(sealed, expected, "segment of {len} bytes");
        let opened = sealer.open(&SealedSegment { index, last, data: sealed }).await.unwrap();
        assert_eq!(opened, data);
    }
}

#[wasm_bindgen_test]
async fn a_wrong_key_a_moved_segment_or_a_flipped_byte_fail_opaquely() {
    let key = FileKey::from_bytes([1; 32]);
    let file_id = FileId([2; 16]);
    let sealer = WebSealer::new(&key, file_id).await.unwrap();
    let sealed = sealer.seal(3, false, b"some plaintext".to_vec()).await.unwrap();
    let wrong = WebSealer::new(&FileKey::from_bytes([9; 32]), file_id).await.unwrap();
    let mut flipped = sealed.clone();
    flipped[4] ^= 1;
    let cases = [
        (wrong.open(&SealedSegment { index: 3, last: false, data: sealed.clone() }).await, 3),
        (sealer.open(&SealedSegment { index: 4, last: false, data: sealed.clone() }).await, 4),
        (sealer.open(&SealedSegment { index: 3, last: true, data: sealed.clone() }).await, 3),
        (sealer.open(&SealedSegment { index: 3, last: false, data: flipped }).await, 3),
        (sealer.open(&SealedSegment { index: 3, last: false, data: vec![0; 5] }).await, 3),
    ];
    for (result, stripe) in cases {
        match result {
            Err(NodeError::Corrupt { detail }) => {
                assert_eq!(
                    detail,
                    format!("segment {stripe} failed to decrypt: wrong key or tampered data")
                );
            }
            other => panic!("expected the decrypt error, got {other:?}"),
        }
    }
}

#[wasm_bindgen_test]
async fn seals_started_together_each_come_back_as_the_reference_seals() {
    let key = FileKey::from_bytes([5; 32]);
    let file_id = FileId([6; 16]);
    let sealer = WebSealer::new(&key, file_id).await.unwrap();
    let reference = SegmentCipher::new(&key, file_id);
    let inputs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100_000 + usize::from(i)]).collect();
    // All four are under way before any is awaited, as an upload seals ahead of coding.
    let started: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, data)| sealer.seal(i as u64, i == 3, data.clone()))
        .collect();
    // Awaited last first: each reply reaches the seal that asked for it.
    for (i, sealing) in started.into_iter().enumerate().rev() {
        let mut expected = inputs[i].clone();
        reference.seal(i as u64, i == 3, &mut expected);
        assert_eq!(sealing.await.unwrap(), expected, "segment {i}");
    }
}

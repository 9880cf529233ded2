//! Codec properties, run natively and in headless Chromium.

#[path = "support/files.rs"]
mod files;
#[path = "support/rng.rs"]
mod rng;

#[cfg(wasm_browser)]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(wasm_browser)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use bytes::Bytes;
use files::{download, upload};
use rng::Rng;
use shardweb_core::codec::{
    DEFAULT_SEGMENT_SIZE, Decoder, Encoder, Error, FileId, FileKey, Layout, Params, SegmentCipher,
    ShardId, VerifiedShard,
};

/// Cases per property: fewer in the browser, where debug wasm is slower.
const CASES: u64 = if cfg!(wasm_browser) { 12 } else { 48 };

fn params(k: usize, m: usize, segment: usize) -> Params {
    Params::new(k, m).unwrap().with_segment_size(segment).unwrap()
}

#[test]
fn round_trips_random_sizes_and_parameters() {
    for seed in 0..CASES {
        let mut rng = Rng::new(seed);
        let k = rng.range(1, 12);
        let m = rng.range(1, 6);
        let seg = rng.range(16, 700);
        let size = match seed % 8 {
            0 => 0,
            1 => 1,
            2 => seg - 1,
            3 => seg,
            4 => seg + 1,
            5 => 2 * seg,
            6 => 3 * seg - 1,
            _ => rng.range(0, 6 * seg),
        };
        let data = rng.bytes(size);
        let up = upload(params(k, m, seg), &data, &mut rng);
        assert_eq!(up.stripes.len() as u64, Layout::new(up.encoded.params, size as u64).stripes());
        // Any k shards per stripe, chosen at random.
        let lost: Vec<Vec<usize>> = up
            .stripes
            .iter()
            .map(|_| {
                let mut idx: Vec<usize> = (0..k + m).collect();
                rng.shuffle(&mut idx);
                idx.truncate(rng.range(0, m));
                idx
            })
            .collect();
        let got = download(&up, &mut rng, |s, i| !lost[s as usize].contains(&i))
            .unwrap_or_else(|e| panic!("seed {seed} (k={k} m={m} seg={seg} size={size}): {e}"));
        assert_eq!(got, data, "seed {seed}");
    }
}

#[test]
fn default_segment_boundaries() {
    let mut rng = Rng::new(7);
    for size in [DEFAULT_SEGMENT_SIZE - 1, DEFAULT_SEGMENT_SIZE + 1] {
        let data = rng.bytes(size);
        let up = upload(Params::new(4, 2).unwrap(), &data, &mut rng);
        assert_eq!(download(&up, &mut rng, |_, i| i != 0 && i != 3).unwrap(), data);
    }
}

#[test]
fn whole_file_replication_with_k_1() {
    let mut rng = Rng::new(11);
    let data = rng.bytes(1000);
    let up = upload(params(1, 2, 4096), &data, &mut rng);
    let stripe = &up.stripes[0];
    assert_eq!(stripe.shards.len(), 3);
    assert_eq!(stripe.shards[1], stripe.shards[0], "k=1 parity is a copy");
    for survivor in 0..3 {
        assert_eq!(download(&up, &mut rng, |_, i| i == survivor).unwrap(), data);
    }
}

/// Every subset of lost shards of size ≤ m decodes; every subset of size m + 1 is the typed
/// error naming the stripe and the count.
#[test]
fn every_loss_pattern_for_small_stripes() {
    for (k, m) in [(1, 1), (2, 1), (2, 2), (3, 2), (4, 2), (2, 3)] {
        let n = k + m;
        let mut rng = Rng::new((k * 10 + m) as u64);
        let data = rng.bytes(300);
        let up = upload(params(k, m, 128), &data, &mut rng);
        for lost in 0u32..(1 << n) {
            let count = lost.count_ones() as usize;
            let result = download(&up, &mut rng, |s, i| s != 1 || lost & (1 << i) == 0);
            if count <= m {
                assert_eq!(result.unwrap(), data, "k={k} m={m} lost={lost:b}");
            } else {
                match result {
                    Err(Error::NotEnoughShards { stripe: 1, found, needed }) => {
                        assert_eq!((found, needed), (n - count, k), "k={k} m={m} lost={lost:b}")
                    }
                    other => panic!("k={k} m={m} lost={lost:b}: {other:?}"),
                }
            }
        }
    }
}

/// A flipped byte anywhere in any shard is refused with an error naming that shard, and the
/// file still decodes from the others.
#[test]
fn corrupt_shards_are_named_and_replaced() {
    let (k, m) = (3, 2);
    let mut rng = Rng::new(5);
    let data = rng.bytes(500);
    let up = upload(params(k, m, 200), &data, &mut rng);
    for index in 0..k + m {
        let good = up.stripes[0].shards[index].clone();
        let mut bad = good.to_vec();
        let at = rng.range(0, bad.len() - 1);
        bad[at] ^= 1 << rng.range(0, 7);
        let mut decoder = up.manifest.decoder(&up.key).unwrap();
        match decoder.add_shard(0, index, Bytes::from(bad)) {
            Err(Error::ShardMismatch { stripe: 0, index: i, expected, .. }) => {
                assert_eq!(i, index);
                assert_eq!(expected, up.stripes[0].ids[index]);
            }
            other => panic!("shard {index}: {other:?}"),
        }
        assert!(!decoder.has_shard(0, index));
        let short = good.slice(1..);
        assert!(matches!(decoder.add_shard(0, index, short), Err(Error::ShardLength { .. })));
        let others = (0..k + m).filter(|&i| i != index).take(k);
        for i in others {
            decoder.add_shard(0, i, up.stripes[0].shards[i].clone()).unwrap();
        }
        assert_eq!(decoder.decode_next().unwrap(), data[..200]);
    }
}

/// A shard verified by the network is taken without hashing it again, but only in the place
/// whose id it was verified against: verified as another shard, or cut short, it is refused.
#[test]
fn verified_shards_are_taken_only_where_their_id_belongs() {
    let (k, m) = (3, 2);
    let mut rng = Rng::new(8);
    let data = rng.bytes(500);
    let up = upload(params(k, m, 200), &data, &mut rng);
    let (ids, shards) = (&up.stripes[0].ids, &up.stripes[0].shards);
    let verified = |i: usize| VerifiedShard::check(ids[i], shards[i].clone()).unwrap();
    let mut decoder = up.manifest.decoder(&up.key).unwrap();
    match decoder.add_verified_shard(0, 0, verified(1)) {
        Err(Error::ShardMismatch { stripe: 0, index: 0, expected, actual }) => {
            assert_eq!((expected, actual), (ids[0], ids[1]));
        }
        other => panic!("{other:?}"),
    }
    let short = shards[2].slice(1..);
    let short = VerifiedShard::check(ShardId::of(&short), short).unwrap();
    assert!(matches!(decoder.add_verified_shard(0, 2, short), Err(Error::ShardLength { .. })));
    assert!(!decoder.has_shard(0, 0) && !decoder.has_shard(0, 2));
    for i in [4, 0, 2] {
        assert_eq!(decoder.add_verified_shard(0, i, verified(i)).unwrap(), i == 2);
    }
    assert_eq!(decoder.decode_next().unwrap(), data[..200]);
}

/// Parity that disagrees with its data (as an uploader could write it, naming each shard by
/// its own hash) is caught where it is used: a data shard rebuilt from it does not match its
/// id, so no reader gets a segment other than the one the manifest names.
#[test]
fn parity_that_disagrees_with_its_data_is_refused_where_it_is_used() {
    let (k, m) = (3, 2);
    let mut rng = Rng::new(21);
    let data = rng.bytes(600);
    let up = upload(params(k, m, 200), &data, &mut rng);
    let mut shards = up.stripes[0].shards.clone();
    let mut forged = shards[k].to_vec();
    forged[7] ^= 0x40;
    shards[k] = Bytes::from(forged);
    let mut ids = up.manifest.shard_ids().to_vec();
    ids[k] = ShardId::of(&shards[k]);
    let layout = *up.manifest.layout();
    let decoder = || Decoder::new(layout, up.manifest.file_id(), ids.clone(), &up.key);
    // Data shards 1 and 2 with the forged parity: data shard 0 comes back wrong.
    let mut with_forged = decoder();
    for i in [1, 2, k] {
        with_forged.add_shard(0, i, shards[i].clone()).unwrap();
    }
    let err = with_forged.decode_next().unwrap_err();
    assert!(matches!(err, Error::InconsistentParity { stripe: 0, index: 0 }), "{err:?}");
    assert_eq!(err.to_string(), "shard 0 of stripe 0, rebuilt from parity, does not match its id");
    // The same stripe decodes from its data shards, or with the parity that agrees.
    for used in [[0, 1, 2], [1, 2, k + 1]] {
        let mut good = decoder();
        for i in used {
            good.add_shard(0, i, shards[i].clone()).unwrap();
        }
        assert_eq!(good.decode_next().unwrap(), data[..200], "{used:?}");
    }
}

#[test]
fn wrong_key_is_an_opaque_error() {
    let mut rng = Rng::new(3);
    let data = rng.bytes(100);
    let up = upload(params(2, 1, 64), &data, &mut rng);
    let wrong = FileKey::from_bytes([0x55; 32]);
    assert!(matches!(up.manifest.decoder(&wrong), Err(shardweb_core::manifest::Error::WrongKey)));
    // A decoder built past the manifest check still refuses to open the segments.
    let mut decoder = Decoder::new(
        *up.manifest.layout(),
        up.manifest.file_id(),
        up.manifest.shard_ids().to_vec(),
        &wrong,
    );
    for i in 0..3 {
        decoder.add_shard(0, i, up.stripes[0].shards[i].clone()).unwrap();
    }
    let err = decoder.decode_next().unwrap_err();
    assert!(matches!(err, Error::Decrypt { stripe: 0 }));
    assert_eq!(err.to_string(), "segment 0 failed to decrypt: wrong key or tampered data");
}

/// Builds a decoder over `stripes` of `up` (by index into its stripes) as if the manifest
/// listed them in that order, with `size` plaintext bytes and `file`'s id.
fn decode_as(up: &files::Uploaded, file: FileId, stripes: &[usize], size: u64) -> Error {
    let ids = stripes.iter().flat_map(|&s| up.stripes[s].ids.clone()).collect();
    let layout = Layout::new(up.encoded.params, size);
    let mut decoder = Decoder::new(layout, file, ids, &up.key).with_window(stripes.len());
    for (pos, &s) in stripes.iter().enumerate() {
        for (i, shard) in up.stripes[s].shards.iter().enumerate() {
            decoder.add_shard(pos as u64, i, shard.clone()).unwrap();
        }
    }
    loop {
        match decoder.decode_next() {
            Ok(_) if decoder.is_done() => panic!("every segment authenticated"),
            Ok(_) => continue,
            Err(e) => return e,
        }
    }
}

#[test]
fn reordered_swapped_and_truncated_segments_fail() {
    let mut rng = Rng::new(9);
    let data = rng.bytes(3 * 64);
    let up = upload(params(2, 1, 64), &data, &mut rng);
    let id = up.manifest.file_id();
    assert!(matches!(decode_as(&up, id, &[1, 0, 2], 192), Error::Decrypt { stripe: 0 }));
    assert!(matches!(decode_as(&up, id, &[0, 2, 1], 192), Error::Decrypt { stripe: 1 }));
    // Cut after segment 1, which was not sealed as the last.
    assert!(matches!(decode_as(&up, id, &[0, 1], 128), Error::Decrypt { stripe: 1 }));
    // The same shards presented as another file's.
    assert!(matches!(decode_as(&up, FileId([0; 16]), &[0, 1, 2], 192), Error::Decrypt { .. }));
    // Every stripe where it belongs decodes.
    assert_eq!(download(&up, &mut rng, |_, _| true).unwrap(), data);
}

#[test]
fn memory_is_bounded_by_the_window() {
    let mut rng = Rng::new(13);
    let seg = 1024;
    let data = rng.bytes(40 * seg);
    let key = FileKey::from_bytes([1; 32]);
    let mut encoder = Encoder::new(params(4, 2, seg), &key, FileId([2; 16]));
    let mut emitted = 0;
    for mut chunk in data.chunks(seg / 2) {
        while let Some(stripe) = encoder.push(&mut chunk).unwrap() {
            // Stripes leave the encoder as soon as each segment is known not to be last.
            assert_eq!(stripe.index, emitted);
            emitted += 1;
        }
        assert!(encoder.bytes_in() - emitted * seg as u64 <= seg as u64);
    }
    assert_eq!(emitted, 39);
    let up = upload(params(4, 2, seg), &data, &mut rng);
    let mut decoder = up.manifest.decoder(&up.key).unwrap().with_window(2);
    let far = up.stripes[2].shards[0].clone();
    assert!(matches!(
        decoder.add_shard(2, 0, far),
        Err(Error::OutsideWindow { stripe: 2, next: 0, end: 2 })
    ));
    assert!(matches!(
        decoder.decode_next(),
        Err(Error::NotEnoughShards { stripe: 0, found: 0, needed: 4 })
    ));
}

#[test]
fn invalid_parameters_are_typed_errors() {
    assert!(matches!(Params::new(0, 1), Err(Error::InvalidParams { k: 0, m: 1 })));
    assert!(matches!(Params::new(1, 0), Err(Error::InvalidParams { k: 1, m: 0 })));
    let err = Params::new(250, 7).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid coding parameters k=250, m=7: need k ≥ 1, m ≥ 1 and k + m ≤ 256"
    );
    assert!(Params::new(128, 128).is_ok());
    let err = Params::new(4, 2).unwrap().with_segment_size(0).unwrap_err();
    assert!(matches!(err, Error::InvalidSegmentSize { segment_size: 0 }));
}

#[test]
fn large_stripes_round_trip() {
    let mut rng = Rng::new(21);
    let data = rng.bytes(5000);
    let up = upload(params(200, 56, 4096), &data, &mut rng);
    assert_eq!(download(&up, &mut rng, |_, i| i % 5 != 0).unwrap(), data);
}

#[test]
fn out_of_range_shards_and_stripes_are_typed_errors() {
    let mut rng = Rng::new(17);
    let data = rng.bytes(100);
    let up = upload(params(2, 1, 64), &data, &mut rng);
    let mut decoder = up.manifest.decoder(&up.key).unwrap();
    let shard = up.stripes[0].shards[0].clone();
    let err = decoder.add_shard(0, 3, shard.clone()).unwrap_err();
    assert!(matches!(err, Error::NoSuchShard { stripe: 0, index: 3, shards: 3 }), "{err}");
    assert!(matches!(decoder.stripe_ids(2), Err(Error::NoSuchStripe { stripe: 2, stripes: 2 })));
    assert!(matches!(decoder.add_shard(2, 0, shard), Err(Error::OutsideWindow { .. })));
}

/// Encodes `data` handed over in 37-byte pieces, through `next_segment` or, `in_place`,
/// `next_segment_from`; sealed with the reference cipher. Returns every shard id and the
/// plaintext hash.
fn encode_by_segments(
    params: Params,
    key: &FileKey,
    file_id: FileId,
    data: &[u8],
    in_place: bool,
) -> (Vec<shardweb_core::codec::ShardId>, [u8; 32]) {
    let cipher = SegmentCipher::new(key, file_id);
    let mut encoder = Encoder::new(params, key, file_id);
    let mut segments = Vec::new();
    for piece in data.chunks(37) {
        if in_place {
            let mut taken = 0;
            while taken < piece.len() {
                let rest = &piece[taken..];
                let (segment, n) = encoder
                    .next_segment_from(rest.len(), |dst| dst.copy_from_slice(&rest[..dst.len()]))
                    .unwrap();
                segments.extend(segment);
                taken += n;
            }
        } else {
            let mut input = piece;
            while let Some(segment) = encoder.next_segment(&mut input).unwrap() {
                segments.push(segment);
            }
        }
    }
    segments.push(encoder.last_segment().unwrap());
    let mut ids = Vec::new();
    for mut segment in segments {
        cipher.seal(segment.index, segment.last, &mut segment.data);
        ids.extend(encoder.code_sealed(segment.index, segment.data).unwrap().ids);
    }
    (ids, encoder.into_encoded().unwrap().plaintext_hash)
}

#[test]
fn segments_filled_in_place_encode_as_pushed_ones() {
    let (key, file_id) = (FileKey::from_bytes([3; 32]), FileId([4; 16]));
    for size in [0, 1, 99, 100, 101, 250, 300] {
        let data = Rng::new(size as u64).bytes(size);
        let pushed = encode_by_segments(params(3, 2, 100), &key, file_id, &data, false);
        let filled = encode_by_segments(params(3, 2, 100), &key, file_id, &data, true);
        assert_eq!(filled, pushed, "{size} bytes");
    }
}

/// A reader that hands out at most 37 bytes per call, like a pipe.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(37).min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        buf[..n].copy_from_slice(head);
        self.0 = tail;
        Ok(n)
    }
}

#[test]
fn a_file_read_in_place_encodes_as_pushed_bytes() {
    let (key, file_id) = (FileKey::from_bytes([3; 32]), FileId([4; 16]));
    for size in [0, 1, 99, 100, 101, 250, 300] {
        let data = Rng::new(size as u64).bytes(size);
        let pushed = encode_by_segments(params(3, 2, 100), &key, file_id, &data, false);
        let mut encoder = Encoder::new(params(3, 2, 100), &key, file_id);
        let (mut reader, mut ids) = (Trickle(&data), Vec::new());
        while let Some(stripe) = encoder.read(&mut reader).unwrap() {
            ids.extend(stripe.ids);
        }
        let (last, encoded) = encoder.finish().unwrap();
        ids.extend(last.ids);
        assert_eq!((ids, encoded.plaintext_hash), pushed, "{size} bytes");
        assert_eq!(encoded.size, size as u64);
    }
}

#[test]
fn a_read_error_stops_the_encoder_with_a_typed_error() {
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("device gone"))
        }
    }
    let key = FileKey::from_bytes([3; 32]);
    let mut encoder = Encoder::new(params(3, 2, 100), &key, FileId([4; 16]));
    match encoder.read(&mut Broken) {
        Err(Error::Read(e)) => assert_eq!(e.to_string(), "device gone"),
        other => panic!("expected a read error, got {other:?}"),
    }
    assert!(matches!(encoder.read(&mut Trickle(b"more")), Err(Error::Finished)));
}

/// The codec's Reed–Solomon engine (in the browser, the SIMD128 engine of this crate; natively,
/// the crate's pick for the processor) computes the parity the portable engine does, and
/// restores lost originals from any k shards, for high and low rates and for shard lengths
/// inside, at and across the engine's 64-byte chunks.
#[test]
fn the_erasure_engine_agrees_with_the_portable_engine() {
    use reed_solomon_simd::engine::{Engine, NoSimd};
    use reed_solomon_simd::rate::{
        DefaultRateDecoder, DefaultRateEncoder, RateDecoder, RateEncoder,
    };
    use shardweb_core::codec::ErasureEngine;

    fn parity<E: Engine>(engine: E, k: usize, m: usize, originals: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let len = originals[0].len();
        let mut rs = DefaultRateEncoder::new(k, m, len, engine, None).unwrap();
        for shard in originals {
            rs.add_original_shard(shard).unwrap();
        }
        rs.encode().unwrap().recovery_iter().map(<[u8]>::to_vec).collect()
    }

    let mut rng = Rng::new(0x5eed_e4e1);
    let shapes = [(1, 1), (2, 1), (4, 2), (3, 5), (6, 3), (10, 4), (16, 16), (5, 27), (40, 24)];
    for (case, &(k, m)) in shapes.iter().enumerate() {
        for len in [2, 62, 64, 66, 128, 1000, 4098] {
            let what = format!("case {case}: k {k}, m {m}, shard length {len}");
            let originals: Vec<Vec<u8>> = (0..k).map(|_| rng.bytes(len)).collect();
            let ours = parity(ErasureEngine::new(), k, m, &originals);
            assert_eq!(ours, parity(NoSimd::new(), k, m, &originals), "{what}: parity");

            // Lose m of the k + m shards, chosen at random but never parity alone, and restore
            // from the rest.
            let mut order: Vec<usize> = (0..k + m).collect();
            rng.shuffle(&mut order);
            let kept = &mut order[..k];
            if kept.iter().all(|&i| i < k) {
                kept[0] = k;
            }
            let kept = &*kept;
            let mut rs = DefaultRateDecoder::new(k, m, len, ErasureEngine::new(), None).unwrap();
            for &i in kept {
                if i < k {
                    rs.add_original_shard(i, &originals[i]).unwrap();
                } else {
                    rs.add_recovery_shard(i - k, &ours[i - k]).unwrap();
                }
            }
            let result = rs.decode().unwrap();
            for (i, original) in originals.iter().enumerate().filter(|(i, _)| !kept.contains(i)) {
                assert_eq!(result.restored_original(i), Some(&original[..]), "{what}: shard {i}");
            }
        }
    }
}

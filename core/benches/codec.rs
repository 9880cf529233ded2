//! Codec throughput against the bound its primitives allow, measured in one run.
//!
//! `cargo bench -p shardweb-core` prints MB/s (10^6 bytes of plaintext per second) for the
//! bare primitives (AES-256-GCM, Reed–Solomon encode and decode, BLAKE3) and for the
//! pipelines: seal + code + hash, and verify + decode + open, with (4, 2) and (10, 4) at 4 MiB
//! segments. Every measurement runs once per round, interleaved, and each figure is the median
//! over rounds, so that a noisy machine slows primitives and pipelines alike. The bound is the
//! speed the pipeline would reach doing nothing but its primitive passes back to back; the
//! ratio is what the glue (copies, allocation, bookkeeping) leaves of it.

#[cfg(not(target_family = "wasm"))]
fn main() {
    native::run();
}

#[cfg(target_family = "wasm")]
fn main() {}

#[cfg(not(target_family = "wasm"))]
mod native {
    use std::hint::black_box;
    use std::time::Instant;

    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    use bytes::Bytes;
    use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
    use shardweb_core::codec::{
        DEFAULT_SEGMENT_SIZE, Decoder, Encoder, FileId, FileKey, Layout, Params, SegmentCipher,
        Stripe,
    };

    const SEGMENT: usize = DEFAULT_SEGMENT_SIZE;
    const FILE: usize = 16 * SEGMENT;
    const ROUNDS: usize = 11;

    type Job<'a> = (usize, Box<dyn FnMut() + 'a>);

    /// Runs every job once per round, interleaved; returns each job's median MB/s.
    fn measure(jobs: &mut [Job<'_>]) -> Vec<f64> {
        jobs.iter_mut().for_each(|(_, f)| f());
        let mut rates = vec![Vec::with_capacity(ROUNDS); jobs.len()];
        for _ in 0..ROUNDS {
            for ((bytes, f), rates) in jobs.iter_mut().zip(&mut rates) {
                let start = Instant::now();
                f();
                rates.push(*bytes as f64 / start.elapsed().as_secs_f64() / 1e6);
            }
        }
        rates
            .into_iter()
            .map(|mut r| {
                r.sort_by(f64::total_cmp);
                r[ROUNDS / 2]
            })
            .collect()
    }

    /// The speed of doing passes at these speeds one after another.
    fn chain(passes: &[f64]) -> f64 {
        1.0 / passes.iter().map(|s| 1.0 / s).sum::<f64>()
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn row(name: &str, mbps: f64) {
        println!("  {name:<46} {mbps:>8.0} MB/s");
    }

    fn ratio(pipeline: f64, bound: f64) {
        row("  bound from the primitives", bound);
        println!("  {:<46} {:>8.0} %", "  pipeline / bound", 100.0 * pipeline / bound);
    }

    pub fn run() {
        let data = pseudo_random(FILE);
        println!(
            "shardweb codec: {} MiB file, {} MiB segments, median of {ROUNDS} interleaved rounds",
            FILE >> 20,
            SEGMENT >> 20
        );
        for (k, m) in [(4, 2), (10, 4)] {
            config(&data, k, m);
        }
    }

    fn config(data: &[u8], k: usize, m: usize) {
        let params = Params::new(k, m).unwrap();
        let shard_len = Layout::new(params, SEGMENT as u64).shard_len(0).unwrap();
        let sealed = pseudo_random(shard_len * k);
        let shards: Vec<&[u8]> = sealed.chunks_exact(shard_len).collect();
        let mut enc = ReedSolomonEncoder::new(k, m, shard_len).unwrap();
        shards.iter().for_each(|s| enc.add_original_shard(s).unwrap());
        let parity: Vec<Vec<u8>> =
            enc.encode().unwrap().recovery_iter().map(<[u8]>::to_vec).collect();

        let key = FileKey::from_bytes([1; 32]);
        let file_id = FileId([2; 16]);
        let encoder = |keep: &mut dyn FnMut(Stripe)| {
            let mut encoder = Encoder::new(params, &key, file_id);
            for mut chunk in data.chunks(1 << 20) {
                while let Some(stripe) = encoder.push(&mut chunk).unwrap() {
                    keep(stripe);
                }
            }
            let (last, encoded) = encoder.finish().unwrap();
            keep(last);
            encoded
        };
        let mut stripes = Vec::new();
        let encoded = encoder(&mut |stripe| stripes.push(stripe));
        let layout = Layout::new(params, FILE as u64);
        let decode = |lost: usize| {
            let ids = encoded.shard_ids.clone();
            let mut decoder = Decoder::new(layout, file_id, ids, &key);
            for stripe in &stripes {
                for (i, shard) in stripe.shards.iter().enumerate().skip(lost).take(k) {
                    decoder.add_shard(stripe.index, i, Bytes::clone(shard)).unwrap();
                }
                black_box(decoder.decode_next().unwrap());
            }
            decoder.finish().unwrap();
        };

        // The pipelines seal with SegmentCipher::new (natively ring's AES-GCM); the reference
        // aes-gcm crate is shown beside it.
        let cipher = SegmentCipher::new(&key, file_id);
        let mut segment = Vec::with_capacity(SEGMENT + 16);
        segment.extend_from_slice(&data[..SEGMENT]);
        let reference = Aes256Gcm::new(&[7u8; 32].into());
        let mut reference_segment = data[..SEGMENT].to_vec();
        let mut dec = ReedSolomonDecoder::new(k, m, shard_len).unwrap();
        let mut jobs: Vec<Job<'_>> = vec![
            (
                SEGMENT,
                Box::new(|| {
                    segment.truncate(SEGMENT);
                    cipher.seal(0, false, &mut segment);
                    black_box(&segment);
                }),
            ),
            (
                SEGMENT,
                Box::new(|| {
                    let nonce = Nonce::from_slice(&[0; 12]);
                    black_box(
                        reference
                            .encrypt_in_place_detached(nonce, b"", &mut reference_segment)
                            .unwrap(),
                    );
                }),
            ),
            (
                SEGMENT,
                Box::new(|| {
                    black_box(blake3::hash(&data[..SEGMENT]));
                }),
            ),
            (
                SEGMENT,
                Box::new(|| {
                    enc.reset(k, m, shard_len).unwrap();
                    shards.iter().for_each(|s| enc.add_original_shard(s).unwrap());
                    black_box(enc.encode().unwrap().recovery(0));
                }),
            ),
            // Worst case for decoding: m data shards lost, rebuilt from parity.
            (
                SEGMENT,
                Box::new(|| {
                    dec.reset(k, m, shard_len).unwrap();
                    for (i, s) in shards.iter().enumerate().skip(m) {
                        dec.add_original_shard(i, s).unwrap();
                    }
                    parity
                        .iter()
                        .enumerate()
                        .for_each(|(i, p)| dec.add_recovery_shard(i, p).unwrap());
                    black_box(dec.decode().unwrap().restored_original(0));
                }),
            ),
            // A host streams each stripe out (store, send) and drops it: so does this.
            (
                FILE,
                Box::new(|| {
                    black_box(encoder(&mut |stripe| drop(black_box(stripe))));
                }),
            ),
            (FILE, Box::new(|| decode(0))),
            (FILE, Box::new(|| decode(m))),
        ];
        let r = measure(&mut jobs);
        let [aes, aes_reference, blake, rs_encode, rs_decode, encode, decode_data, decode_lost] =
            r[..]
        else {
            unreachable!()
        };
        let spread = (k + m) as f64 / k as f64;

        println!("({k}, {m}): shards of {shard_len} bytes");
        row("AES-256-GCM seal (the codec's), 4 MiB", aes);
        row("AES-256-GCM seal (aes-gcm, the reference)", aes_reference);
        row("BLAKE3, 4 MiB", blake);
        row("RS encode (reed-solomon-simd)", rs_encode);
        row(&format!("RS decode, {m} data shards lost"), rs_decode);
        // Encode: seal, RS encode, hash every shard ((k+m)/k of the data), hash the plaintext.
        row("seal + code + hash (Encoder)", encode);
        ratio(encode, chain(&[aes, rs_encode, blake / spread, blake]));
        // Decode: verify k shards, RS decode only when data shards are missing (and verify
        // the m data shards it rebuilds), open.
        row("verify + open, all data shards (Decoder)", decode_data);
        ratio(decode_data, chain(&[blake, aes]));
        row(&format!("verify + decode + open, {m} lost (Decoder)"), decode_lost);
        let rebuilt = k as f64 / m as f64;
        ratio(decode_lost, chain(&[blake, rs_decode, blake * rebuilt, aes]));
    }
}

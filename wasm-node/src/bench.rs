//! The browser codec's speed, measured where it runs: WebCrypto AES-GCM, Reed–Solomon and
//! BLAKE3 alone, and the pipelines (seal + code + hash; verify + decode + open) over the same
//! segments, interleaved round by round so that a busy machine slows all alike. The
//! benchmark harness (`tests/browser/bench.mjs`) calls it in a worker.

use bytes::Bytes;
use js_sys::{Function, Object, Reflect};
use reed_solomon_simd::engine::{Engine, NoSimd};
use reed_solomon_simd::rate::{DefaultRateEncoder, RateEncoder};
use shardweb_core::codec::{
    Decoder, Encoder, ErasureEngine, FileId, FileKey, Layout, Params, SegmentCipher,
};
use wasm_bindgen::prelude::*;

use crate::error::NodeError;
use crate::webcrypto::WebSealer;

const SEGMENT: usize = 4 << 20;
const SEGMENTS: usize = 8;

fn now() -> f64 {
    let performance =
        Reflect::get(&js_sys::global(), &"performance".into()).unwrap_or(JsValue::UNDEFINED);
    Reflect::get(&performance, &"now".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .and_then(|f| f.call0(&performance).ok())
        .and_then(|t| t.as_f64())
        .unwrap_or_else(js_sys::Date::now)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Pseudo-random bytes (xorshift): incompressible, and the same every run.
fn data(len: usize) -> Vec<u8> {
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

/// What every measurement here codes with: (k, m), a fixed key and file id, and a WebCrypto
/// sealer for them.
async fn fixture(k: usize, m: usize) -> Result<(Params, FileKey, FileId, WebSealer), NodeError> {
    let params = Params::new(k, m)?;
    let key = FileKey::from_bytes([7; 32]);
    let file_id = FileId([9; 16]);
    let sealer = WebSealer::new(&key, file_id).await?;
    Ok((params, key, file_id, sealer))
}

/// Measures `rounds` rounds at (k, m) with 4 MiB segments; resolves to `{ stage: MB/s }`.
#[wasm_bindgen(js_name = benchCodec)]
pub async fn bench_codec(k: usize, m: usize, rounds: usize) -> Result<JsValue, JsValue> {
    run(k, m, rounds.max(1)).await.map_err(|e| e.to_js())
}

async fn run(k: usize, m: usize, rounds: usize) -> Result<JsValue, NodeError> {
    let (params, key, file_id, sealer) = fixture(k, m).await?;
    let plain = data(SEGMENT * SEGMENTS);
    let reference = SegmentCipher::new(&key, file_id);
    let mb = (SEGMENT * SEGMENTS) as f64 / 1e6;
    let names = [
        "webcrypto seal",
        "aes-gcm (software) seal",
        "reed-solomon encode",
        "reed-solomon encode (portable engine)",
        "blake3",
        "seal + code + hash",
        "verify + decode + open (data shards)",
        "verify + decode + open (m lost)",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        let segments: Vec<&[u8]> = plain.chunks(SEGMENT).collect();
        // WebCrypto alone (the seal takes its plaintext: copied before the clock starts).
        let owned: Vec<Vec<u8>> = segments.iter().map(|s| s.to_vec()).collect();
        let t = now();
        for (i, s) in owned.into_iter().enumerate() {
            sealer.seal(i as u64, false, s).await?;
        }
        samples[0].push(mb / ((now() - t) / 1000.0));
        // Software AES-GCM in wasm, for comparison.
        let t = now();
        for (i, s) in segments.iter().enumerate().take(2) {
            let mut buf = s.to_vec();
            reference.seal(i as u64, false, &mut buf);
        }
        samples[1].push(mb / SEGMENTS as f64 * 2.0 / ((now() - t) / 1000.0));
        // Reed–Solomon alone: the engine the codec uses, and the crate's portable one that
        // wasm would otherwise get.
        samples[2].push(mb / rs_encode(k, m, &plain[..SEGMENT], ErasureEngine::new())?);
        samples[3].push(mb / rs_encode(k, m, &plain[..SEGMENT], NoSimd::new())?);
        // BLAKE3 over as many bytes as the shards of the file.
        let t = now();
        for s in &segments {
            std::hint::black_box(blake3::hash(s));
        }
        samples[4].push(mb / ((now() - t) / 1000.0));
        // The upload pipeline, as the node runs it.
        let t = now();
        let mut encoder = Encoder::new(params, &key, file_id);
        let mut input = &plain[..];
        let mut stripes = Vec::new();
        let mut pending = Vec::new();
        while let Some(segment) = encoder.next_segment(&mut input)? {
            pending.push(segment);
        }
        pending.push(encoder.last_segment()?);
        for segment in pending {
            let sealed = sealer.seal(segment.index, segment.last, segment.data).await?;
            stripes.push(encoder.code_sealed(segment.index, sealed)?);
        }
        let encoded = encoder.into_encoded()?;
        samples[5].push(mb / ((now() - t) / 1000.0));
        // The download pipeline, from data shards and with m shards of each stripe lost.
        for (slot, lost) in [(6, 0), (7, m)] {
            let t = now();
            let layout = Layout::new(params, encoded.size);
            let mut decoder = Decoder::new(layout, file_id, encoded.shard_ids.clone(), &key)
                .with_window(SEGMENTS + 1);
            for stripe in &stripes {
                for (i, shard) in stripe.shards.iter().enumerate().skip(lost).take(k) {
                    decoder.add_shard(stripe.index, i, Bytes::clone(shard))?;
                }
            }
            while !decoder.is_done() {
                let sealed = decoder.decode_next_sealed()?;
                std::hint::black_box(sealer.open(&sealed).await?);
            }
            decoder.finish()?;
            samples[slot].push(mb / ((now() - t) / 1000.0));
        }
    }
    let out = Object::new();
    for (name, s) in names.iter().zip(samples) {
        let _ = Reflect::set(&out, &(*name).into(), &median(s).into());
    }
    Ok(out.into())
}

/// Milliseconds to seal, code and hash `mib` MiB (in whole segments) at (k, m) as an upload
/// does (the seal of the next segment under way in the crypto worker while this thread codes
/// and hashes the one before), with no file read and nothing sent or kept: the computing a put
/// cannot avoid. The benchmark runs it beside a plain post of as many bytes as the shards, for
/// the floor under a put's speed on the machine.
#[wasm_bindgen(js_name = benchPutWork)]
pub async fn bench_put_work(k: usize, m: usize, mib: usize) -> Result<f64, JsValue> {
    put_work(k, m, mib).await.map_err(|e| e.to_js())
}

async fn put_work(k: usize, m: usize, mib: usize) -> Result<f64, NodeError> {
    let (params, key, file_id, sealer) = fixture(k, m).await?;
    let plain = data(SEGMENT);
    let mut encoder = Encoder::new(params, &key, file_id);
    let mut sealing = std::collections::VecDeque::new();
    let t = now();
    let full = (mib << 20).div_ceil(SEGMENT);
    for round in 0..=full {
        let segments = if round < full {
            let mut input = &plain[..];
            let mut segments = Vec::new();
            while let Some(segment) = encoder.next_segment(&mut input)? {
                segments.push(segment);
            }
            segments
        } else {
            vec![encoder.last_segment()?]
        };
        for segment in segments {
            let last = segment.last;
            sealing.push_back((segment.index, sealer.seal(segment.index, last, segment.data)));
            while sealing.len() > 1 || (last && !sealing.is_empty()) {
                let Some((index, sealed)) = sealing.pop_front() else { break };
                std::hint::black_box(encoder.code_sealed(index, sealed.await?)?);
            }
        }
    }
    std::hint::black_box(encoder.into_encoded()?);
    Ok(now() - t)
}

/// Milliseconds to verify, decode and open `mib` MiB (in whole files of `SEGMENTS` segments)
/// at (k, m) from data shards already in memory, as a download does (the open of one segment
/// under way in the crypto worker while this thread verifies the next one's shards), with
/// nothing fetched: the computing a get cannot avoid. The benchmark runs it beside a plain
/// fetch of as many bytes.
#[wasm_bindgen(js_name = benchGetWork)]
pub async fn bench_get_work(k: usize, m: usize, mib: usize) -> Result<f64, JsValue> {
    get_work(k, m, mib).await.map_err(|e| e.to_js())
}

async fn get_work(k: usize, m: usize, mib: usize) -> Result<f64, NodeError> {
    let (params, key, file_id, sealer) = fixture(k, m).await?;
    // A file of `SEGMENTS` segments, coded before the clock starts, read over and over.
    let mut encoder = Encoder::new(params, &key, file_id);
    let plain = data(SEGMENT * SEGMENTS);
    let mut input = &plain[..];
    let mut segments = Vec::new();
    while let Some(segment) = encoder.next_segment(&mut input)? {
        segments.push(segment);
    }
    segments.push(encoder.last_segment()?);
    let mut stripes = Vec::new();
    for segment in segments {
        let sealed = sealer.seal(segment.index, segment.last, segment.data).await?;
        stripes.push(encoder.code_sealed(segment.index, sealed)?);
    }
    let encoded = encoder.into_encoded()?;
    let t = now();
    for _ in 0..(mib << 20).div_ceil(SEGMENT * SEGMENTS) {
        let layout = Layout::new(params, encoded.size);
        let mut decoder = Decoder::new(layout, file_id, encoded.shard_ids.clone(), &key)
            .with_window(SEGMENTS + 1);
        let mut opening = std::collections::VecDeque::new();
        for stripe in &stripes {
            for (i, shard) in stripe.shards.iter().enumerate().take(k) {
                decoder.add_shard(stripe.index, i, Bytes::clone(shard))?;
            }
            while decoder.is_next_ready() {
                opening.push_back(sealer.open_to_js(decoder.decode_next_sealed()?));
            }
            while opening.len() > 1 {
                let Some(open) = opening.pop_front() else { break };
                std::hint::black_box(open.await?);
            }
        }
        for open in opening {
            std::hint::black_box(open.await?);
        }
        decoder.finish()?;
    }
    Ok(now() - t)
}

/// Seconds to Reed–Solomon code `SEGMENTS` segments like `segment` with `engine`.
fn rs_encode<E: Engine>(k: usize, m: usize, segment: &[u8], engine: E) -> Result<f64, NodeError> {
    let err = shardweb_core::codec::Error::from;
    let len = segment.len().div_ceil(k) + (segment.len().div_ceil(k) & 1);
    let mut padded = segment.to_vec();
    padded.resize(len * k, 0);
    let mut rs = DefaultRateEncoder::new(k, m, len, engine, None).map_err(err)?;
    let t = now();
    for _ in 0..SEGMENTS {
        for shard in padded.chunks_exact(len) {
            rs.add_original_shard(shard).map_err(err)?;
        }
        std::hint::black_box(rs.encode().map_err(err)?);
    }
    Ok((now() - t) / 1000.0)
}

#[cfg(test)]
mod tests {
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::{get_work, put_work};

    wasm_bindgen_test_configure!(run_in_browser);

    /// The floors' computing takes whole files through, as the benchmark measures it: the
    /// put's encoder ends complete (it errs on a stripe left uncoded) and the get's decoder
    /// opens every segment (it errs on a shard that does not verify, a segment that does not
    /// open or one left unread), for one stripe's worth and for several rounds of stripes.
    #[wasm_bindgen_test]
    async fn the_floors_work_runs_a_whole_file_through() {
        for (k, m, mib) in [(4, 2, 1), (4, 2, 9), (10, 4, 40)] {
            assert!(put_work(k, m, mib).await.unwrap() > 0.0, "put ({k}, {m}), {mib} MiB");
            assert!(get_work(k, m, mib).await.unwrap() > 0.0, "get ({k}, {m}), {mib} MiB");
        }
    }
}

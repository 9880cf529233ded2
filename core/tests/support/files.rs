//! Encoding whole test files and feeding their shards back.

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use shardweb_core::codec::{Encoded, Encoder, FileId, FileKey, Params, Stripe};
use shardweb_core::{FileMeta, Manifest};

use super::rng::Rng;

pub struct Uploaded {
    pub stripes: Vec<Stripe>,
    pub encoded: Encoded,
    pub manifest: Manifest,
    pub key: FileKey,
}

/// Encodes `data`, pushed in random chunk sizes, and writes its manifest.
pub fn upload(params: Params, data: &[u8], rng: &mut Rng) -> Uploaded {
    let key = FileKey::from_bytes(rng.bytes(32).try_into().unwrap());
    let file_id = FileId(rng.bytes(16).try_into().unwrap());
    let mut encoder = Encoder::new(params, &key, file_id);
    let mut stripes = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.range(1, rest.len().min(3 * params.segment_size()));
        let (mut chunk, tail) = rest.split_at(n);
        rest = tail;
        while let Some(stripe) = encoder.push(&mut chunk).unwrap() {
            stripes.push(stripe);
        }
    }
    let (last, encoded) = encoder.finish().unwrap();
    stripes.push(last);
    let meta = FileMeta { name: "test.bin".into(), mime: "application/octet-stream".into() };
    let signer = SigningKey::from_bytes(&rng.bytes(32).try_into().unwrap());
    let manifest = Manifest::create(&encoded, &meta, &key, &signer).unwrap();
    Uploaded { stripes, encoded, manifest, key }
}

/// Downloads with `keep(stripe, index)` deciding which shards are offered, in a random order
/// within the decoder's window. Returns the plaintext or the first error.
pub fn download(
    up: &Uploaded,
    rng: &mut Rng,
    keep: impl Fn(u64, usize) -> bool,
) -> Result<Vec<u8>, shardweb_core::codec::Error> {
    let mut decoder = up.manifest.decoder(&up.key).unwrap().with_window(3);
    let mut out = Vec::new();
    while !decoder.is_done() {
        let mut offers: Vec<(u64, usize)> = (decoder.next_stripe()..decoder.window_end())
            .flat_map(|s| (0..up.stripes[s as usize].shards.len()).map(move |i| (s, i)))
            .filter(|&(s, i)| keep(s, i) && !decoder.has_shard(s, i))
            .collect();
        rng.shuffle(&mut offers);
        for (s, i) in offers {
            let shard: Bytes = up.stripes[s as usize].shards[i].clone();
            decoder.add_shard(s, i, shard)?;
        }
        out.extend_from_slice(&decoder.decode_next()?);
    }
    decoder.finish()?;
    Ok(out)
}

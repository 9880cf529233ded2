//! Golden vectors and hostile inputs for the manifest and link formats and a fixed encode,
//! run natively and in headless Chromium. `UPDATE_GOLDEN=1 cargo test -p shardweb-core --test
//! formats` rewrites the snapshot files after a deliberate format change.

#[path = "support/rng.rs"]
mod rng;

#[cfg(wasm_browser)]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(wasm_browser)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use ed25519_dalek::SigningKey;
use rng::Rng;
use shardweb_core::codec::{Encoder, FileId, FileKey, Params, Stripe};
use shardweb_core::link::{self, Part};
use shardweb_core::manifest::{self, Error, MAX_MANIFEST_BYTES};
use shardweb_core::{FileMeta, Link, Manifest, ManifestId};

const MANIFEST_V1: &str = include_str!("golden/manifest-v1.hex");
/// BLAKE3 over every shard of the fixed encode, in stripe and shard order.
const SHARDS_DIGEST: &str = "ed5e82cb374e890b4cbec4135d14abc314a27670be5849749bae84b228d89a4e";
const LINK: &str = "shardweb:lbZ5kCDHh70DHmBhVwYNt6LeFV5_c33Af86o-T2pbn8.ERERERERERERERERERERERERERERERERERERERERERE";

/// The fixed file: 1000 bytes from seed 42, (3, 2) with 256-byte segments, fixed key, id,
/// signer and nonce.
fn fixture() -> (Vec<Stripe>, Manifest, FileKey) {
    let data = Rng::new(42).bytes(1000);
    let key = FileKey::from_bytes([0x11; 32]);
    let params = Params::new(3, 2).unwrap().with_segment_size(256).unwrap();
    let mut encoder = Encoder::new(params, &key, FileId([0x22; 16]));
    let mut stripes = Vec::new();
    let mut input = &data[..];
    while let Some(s) = encoder.push(&mut input).unwrap() {
        stripes.push(s);
    }
    let (last, encoded) = encoder.finish().unwrap();
    stripes.push(last);
    let meta = FileMeta { name: "golden.txt".into(), mime: "text/plain".into() };
    let signer = SigningKey::from_bytes(&[0x33; 32]);
    let manifest = Manifest::create_with_nonce(&encoded, &meta, &key, &signer, [0x44; 12]).unwrap();
    (stripes, manifest, key)
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn golden_manifest() -> Vec<u8> {
    let text: String = MANIFEST_V1.split_whitespace().collect();
    data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap()
}

#[cfg(not(wasm_browser))]
fn update_golden(manifest: &Manifest) -> bool {
    if std::env::var_os("UPDATE_GOLDEN").is_none() {
        return false;
    }
    let text = hex(manifest.bytes())
        .as_bytes()
        .chunks(64)
        .fold(String::new(), |acc, line| acc + std::str::from_utf8(line).unwrap() + "\n");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/manifest-v1.hex");
    std::fs::write(path, text).unwrap();
    true
}

#[cfg(wasm_browser)]
fn update_golden(_: &Manifest) -> bool {
    false
}

#[test]
fn manifest_encoding_matches_golden_vector() {
    let (_, manifest, key) = fixture();
    if update_golden(&manifest) {
        return;
    }
    assert_eq!(hex(manifest.bytes()), hex(&golden_manifest()), "manifest v1 encoding changed");
    let parsed = Manifest::decode(&golden_manifest()).unwrap();
    assert_eq!(parsed, manifest);
    assert_eq!(parsed.layout().size(), 1000);
    assert_eq!(parsed.layout().stripes(), 4);
    assert_eq!(parsed.layout().params().k(), 3);
    assert_eq!(parsed.shard_ids().len(), 20);
    let opened = parsed.open(&key).unwrap();
    assert_eq!(opened.meta.name, "golden.txt");
    assert_eq!(opened.meta.mime, "text/plain");
    assert_eq!(opened.plaintext_hash, *blake3::hash(&Rng::new(42).bytes(1000)).as_bytes());
}

#[test]
fn fixed_encode_matches_golden_vector() {
    let (stripes, manifest, _) = fixture();
    let mut all = blake3::Hasher::new();
    for stripe in &stripes {
        for (shard, id) in stripe.shards.iter().zip(&stripe.ids) {
            assert_eq!(*id, shardweb_core::ShardId::of(shard));
            all.update(shard);
        }
    }
    assert_eq!(stripes.iter().map(|s| s.shards[0].len()).collect::<Vec<_>>(), [92, 92, 92, 84]);
    assert_eq!(hex(all.finalize().as_bytes()), SHARDS_DIGEST);
    let ids: Vec<_> = stripes.iter().flat_map(|s| s.ids.clone()).collect();
    assert_eq!(ids, manifest.shard_ids());
}

#[test]
fn link_matches_golden_vector() {
    let (_, manifest, key) = fixture();
    let link = Link { manifest: manifest.id(), key };
    assert_eq!(link.to_string(), LINK);
    let fragment = LINK.strip_prefix("shardweb:").unwrap();
    assert_eq!(link.to_url("http://127.0.0.1:8080/"), format!("http://127.0.0.1:8080/#{fragment}"));
    for form in [
        LINK.to_owned(),
        format!("#{fragment}"),
        fragment.to_owned(),
        format!("  http://127.0.0.1:8080/?x=1#{fragment}\n"),
    ] {
        assert_eq!(Link::parse(&form).unwrap(), link, "{form}");
    }
    assert_eq!(
        fragment.parse::<Link>().unwrap().manifest.to_string().parse::<ManifestId>().unwrap(),
        manifest.id()
    );
}

#[test]
fn malformed_links_are_typed_errors_that_hide_the_key() {
    let (_, manifest, _) = fixture();
    let id = manifest.id().to_string();
    let key = "ERERERERERERERERERERERERERERERERERERERERERE";
    let cases: Vec<(String, link::Error)> = vec![
        (String::new(), link::Error::Empty),
        ("shardweb:".into(), link::Error::Empty),
        ("http://host/#".into(), link::Error::Empty),
        (id.clone(), link::Error::MissingSeparator),
        (format!("{id}{key}"), link::Error::MissingSeparator),
        (format!("!!.{key}"), link::Error::BadEncoding { part: Part::ManifestId }),
        (format!("{id}.{key}="), link::Error::BadEncoding { part: Part::Key }),
        (format!("{id}.{key}.x"), link::Error::BadEncoding { part: Part::Key }),
        (format!("{id}.{}", &key[..42]), link::Error::BadEncoding { part: Part::Key }),
        (format!("{id}.{}", &key[..40]), link::Error::BadLength { part: Part::Key, len: 30 }),
        (format!("AAAA.{key}"), link::Error::BadLength { part: Part::ManifestId, len: 3 }),
    ];
    for (input, expected) in cases {
        let err = Link::parse(&input).unwrap_err();
        assert_eq!(err, expected, "{input:?}");
        assert!(!err.to_string().contains(key));
    }
    assert!(!format!("{:?}", Link::parse(&format!("{id}.{key}")).unwrap()).contains(key));
}

#[test]
fn every_truncation_and_byte_flip_is_refused() {
    let bytes = golden_manifest();
    for len in 0..bytes.len() {
        assert!(Manifest::decode(&bytes[..len]).is_err(), "truncated to {len}");
    }
    let step = if cfg!(wasm_browser) { 7 } else { 1 };
    for at in (0..bytes.len()).step_by(step) {
        for bit in [0, 3, 7] {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            assert!(Manifest::decode(&bad).is_err(), "flip of bit {bit} at byte {at} accepted");
        }
    }
}

#[test]
fn hostile_manifests_get_the_right_error() {
    let bytes = golden_manifest();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        Manifest::decode(&b).unwrap_err()
    };
    assert!(matches!(with(&|b| b[0] = b'X'), Error::BadMagic));
    assert!(matches!(with(&|b| b[4] = 2), Error::UnsupportedVersion { version: 2 }));
    assert!(matches!(with(&|b| b[21..23].copy_from_slice(&[0, 0])), Error::Params(_)));
    assert!(matches!(with(&|b| b.push(0)), Error::TrailingBytes { extra: 1 }));
    let sig_at = bytes.len() - 64;
    assert!(matches!(with(&|b| b[sig_at..].fill(0)), Error::BadSignature));
    assert!(matches!(with(&|b| b.truncate(40)), Error::Truncated { field: "shard ids" }));
    // A size that claims more stripes than the manifest holds ids for.
    assert!(matches!(
        with(&|b| b[29..37].copy_from_slice(&2000u64.to_be_bytes())),
        Error::Truncated { .. }
    ));
    // A size whose stripes no manifest could list.
    let huge = with(&|b| b[29..37].copy_from_slice(&u64::MAX.to_be_bytes()));
    assert!(matches!(huge, Error::Params(_)), "{huge}");
    let oversized = vec![0u8; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(Manifest::decode(&oversized), Err(Error::TooLarge { .. })));
    let other_id = ManifestId([9; 32]);
    assert!(matches!(Manifest::decode_as(&other_id, &bytes), Err(Error::IdMismatch { .. })));
    let (_, manifest, _) = fixture();
    assert!(Manifest::decode_as(&manifest.id(), &bytes).is_ok());
    assert!(matches!(manifest.open(&FileKey::from_bytes([0; 32])), Err(Error::WrongKey)));
}

#[test]
fn oversized_metadata_is_refused_at_creation() {
    let key = FileKey::from_bytes([1; 32]);
    let mut encoder = Encoder::new(Params::default(), &key, FileId([0; 16]));
    encoder.push(&mut &b"x"[..]).unwrap();
    let (_, encoded) = encoder.finish().unwrap();
    let signer = SigningKey::from_bytes(&[2; 32]);
    let long = FileMeta { name: "n".repeat(manifest::MAX_NAME_BYTES + 1), mime: String::new() };
    let err = Manifest::create(&encoded, &long, &key, &signer).unwrap_err();
    assert!(matches!(err, Error::NameTooLong { len: 1025, max: 1024 }));
    let ok = FileMeta { name: "ünïcødé name.bin".into(), mime: "a/b".into() };
    let m = Manifest::create(&encoded, &ok, &key, &signer).unwrap();
    assert_eq!(m.open(&key).unwrap().meta, ok);
}

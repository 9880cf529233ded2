//! ChaCha20 in the browser build (vendor/chacha20's SIMD backend, the cipher of Noise between
//! a browser and its relays) gives RFC 8439's ciphertext, the keystream the published crate
//! gives natively, and the same bytes as a plain implementation of the RFC at every length
//! and starting block around its four-block stride.
#![cfg(wasm_browser)]

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// The RFC's block function, word by word.
fn block(key: &[u8; 32], nonce: &[u8; 12], counter: u32) -> [u8; 64] {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut state = [0u32; 16];
    state[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for i in 0..8 {
        state[4 + i] = word(&key[4 * i..]);
    }
    state[12] = counter;
    for i in 0..3 {
        state[13 + i] = word(&nonce[4 * i..]);
    }
    let mut x = state;
    let qr = |x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize| {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    };
    for _ in 0..10 {
        for (a, b, c, d) in [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)] {
            qr(&mut x, a, b, c, d);
        }
        for (a, b, c, d) in [(0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)] {
            qr(&mut x, a, b, c, d);
        }
    }
    let mut out = [0u8; 64];
    for i in 0..16 {
        out[4 * i..4 * i + 4].copy_from_slice(&x[i].wrapping_add(state[i]).to_le_bytes());
    }
    out
}

/// `len` bytes of keystream from byte `start`, by the RFC's block function.
fn plain_keystream(key: &[u8; 32], nonce: &[u8; 12], start: u64, len: usize) -> Vec<u8> {
    let first = start / 64;
    let blocks = (start % 64) as usize + len;
    let mut out = Vec::with_capacity(blocks.div_ceil(64) * 64);
    for i in 0..blocks.div_ceil(64) as u64 {
        out.extend_from_slice(&block(key, nonce, (first + i) as u32));
    }
    out[(start % 64) as usize..][..len].to_vec()
}

#[wasm_bindgen_test]
fn the_rfc_8439_example_encrypts_as_published() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let nonce = [0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0];
    let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it."
        .to_vec();
    let mut cipher = ChaCha20::new(&key.into(), &nonce.into());
    cipher.seek(64u64);
    cipher.apply_keystream(&mut text);
    let expected = "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c552\
4733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d1\
6ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d";
    let hex: String = text.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

/// BLAKE3 of 1 MiB + 77 bytes of keystream under key 0x42.., nonce 0x24.., as the published
/// chacha20 0.9.1 computes it on x86-64.
#[wasm_bindgen_test]
fn a_long_keystream_matches_the_native_one() {
    let mut buf = vec![0u8; (1 << 20) + 77];
    ChaCha20::new(&[0x42; 32].into(), &[0x24; 12].into()).apply_keystream(&mut buf);
    assert_eq!(
        blake3::hash(&buf).to_hex().as_str(),
        "cf61d43023c64e45d82ecd3806d9604db04be41d6f99887e1ad4c322669539c1"
    );
}

/// Every length up to 9 blocks from every byte offset in the first 5 blocks, in one call
/// and in two uneven calls, against the plain block function.
#[wasm_bindgen_test]
fn every_length_and_position_agrees_with_the_plain_rfc() {
    let key: [u8; 32] = std::array::from_fn(|i| (7 * i + 3) as u8);
    let nonce: [u8; 12] = std::array::from_fn(|i| (5 * i + 1) as u8);
    for start in (0..5 * 64).step_by(13).chain([63, 64, 127, 128, 255, 256]) {
        for len in (0..9 * 64).step_by(7).chain([64, 128, 192, 256, 320, 512]) {
            let expected = plain_keystream(&key, &nonce, start, len);
            let mut cipher = ChaCha20::new(&key.into(), &nonce.into());
            cipher.seek(start);
            let mut whole = vec![0u8; len];
            cipher.apply_keystream(&mut whole);
            assert_eq!(whole, expected, "start {start} len {len}");

            let mut cipher = ChaCha20::new(&key.into(), &nonce.into());
            cipher.seek(start);
            let mut split = vec![0u8; len];
            let (a, b) = split.split_at_mut(len / 3);
            cipher.apply_keystream(a);
            cipher.apply_keystream(b);
            assert_eq!(split, expected, "start {start} len {len} in two calls");
        }
    }
}

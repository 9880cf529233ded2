//! Sealing segments with AES-256-GCM.
//!
//! Every file has its own random 32-byte [`FileKey`] (the one in the share link) and a random
//! 16-byte [`FileId`] (public, in the manifest). The AES key for segments is derived from the
//! file key with BLAKE3 in key-derivation mode, so the link key is never used directly. Segment
//! `i` is sealed with nonce [`segment_nonce`]`(i)` and associated data
//! [`segment_aad`]`(file_id, i, last)`: a segment moved to another position, into another file,
//! or a file cut short after a segment not marked last, all fail to open.

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Error;

/// Length of a file key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a file id in bytes.
pub const FILE_ID_LEN: usize = 16;
/// Length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag appended to every sealed segment.
pub const TAG_LEN: usize = 16;

const SEGMENT_KEY_CONTEXT: &str = "shardweb 2026-11 segment key v1";
const MANIFEST_KEY_CONTEXT: &str = "shardweb 2026-11 manifest key v1";
const AAD_PREFIX: &[u8; 13] = b"shardweb/seg1";

/// The per-file secret carried in a share link's fragment. Zeroed on drop; never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct FileKey([u8; KEY_LEN]);

impl FileKey {
    /// A fresh random key from the platform's secure generator.
    pub fn generate() -> Result<Self, Error> {
        let mut key = [0u8; KEY_LEN];
        getrandom::getrandom(&mut key).map_err(Error::Random)?;
        Ok(Self(key))
    }

    /// A key from its raw bytes (as carried in a link).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for building a link.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The AES-256 key that seals segments. A host that seals with another AES-GCM
    /// implementation (WebCrypto) imports this key.
    pub fn segment_key(&self) -> [u8; KEY_LEN] {
        blake3::derive_key(SEGMENT_KEY_CONTEXT, &self.0)
    }

    /// The AES-256 key that seals the private part of the manifest.
    pub(crate) fn manifest_cipher(&self) -> Aes256Gcm {
        let mut key = blake3::derive_key(MANIFEST_KEY_CONTEXT, &self.0);
        let cipher = Aes256Gcm::new(&key.into());
        key.zeroize();
        cipher
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// A file's public random identity, bound into every segment's associated data.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub [u8; FILE_ID_LEN]);

impl FileId {
    /// A fresh random file id.
    pub fn generate() -> Result<Self, Error> {
        let mut id = [0u8; FILE_ID_LEN];
        getrandom::getrandom(&mut id).map_err(Error::Random)?;
        Ok(Self(id))
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// The nonce of segment `index`: four zero bytes, then the index as a big-endian u64.
/// Unique per segment because every file has its own key.
pub fn segment_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&index.to_be_bytes());
    nonce
}

/// The associated data of segment `index`: `"shardweb/seg1"`, the file id, the index as a
/// big-endian u64, and 1 if it is the file's last segment, else 0.
pub fn segment_aad(file_id: &FileId, index: u64, last: bool) -> [u8; 38] {
    let mut aad = [0u8; 38];
    aad[..13].copy_from_slice(AAD_PREFIX);
    aad[13..29].copy_from_slice(&file_id.0);
    aad[29..37].copy_from_slice(&index.to_be_bytes());
    aad[37] = u8::from(last);
    aad
}

/// The segment sealer for one file. [`SegmentCipher::new`] takes the fastest AES-256-GCM this
/// target has (natively `ring`'s, with AES-NI and carry-less multiplication where the CPU has
/// them); [`SegmentCipher::reference`] takes the reference, the `aes-gcm` crate. Both produce
/// the same bytes, and open each other's segments.
#[derive(Clone)]
pub struct SegmentCipher {
    aead: Aead,
    file_id: FileId,
}

#[derive(Clone)]
enum Aead {
    Reference(Box<Aes256Gcm>),
    #[cfg(not(target_family = "wasm"))]
    Ring(Box<ring::aead::LessSafeKey>),
}

impl SegmentCipher {
    /// The cipher for segments of the file `file_id` under `key`, with the fastest AES-GCM
    /// this target has.
    pub fn new(key: &FileKey, file_id: FileId) -> Self {
        #[cfg(not(target_family = "wasm"))]
        {
            let mut segment_key = key.segment_key();
            let ring = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &segment_key);
            segment_key.zeroize();
            if let Ok(ring) = ring {
                let key = Box::new(ring::aead::LessSafeKey::new(ring));
                return Self { aead: Aead::Ring(key), file_id };
            }
        }
        Self::reference(key, file_id)
    }

    /// The cipher for segments of the file `file_id` under `key`, with the reference AES-GCM
    /// (the `aes-gcm` crate) on every target.
    pub fn reference(key: &FileKey, file_id: FileId) -> Self {
        let mut segment_key = key.segment_key();
        let aes = Box::new(Aes256Gcm::new(&segment_key.into()));
        segment_key.zeroize();
        Self { aead: Aead::Reference(aes), file_id }
    }

    /// Encrypts `buf` (the plaintext of segment `index`) in place and appends the tag.
    pub fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        let aad = segment_aad(&self.file_id, index, last);
        let nonce = segment_nonce(index);
        // Encryption only fails for inputs over 64 GiB; segments are at most 64 MiB.
        match &self.aead {
            Aead::Reference(aes) => {
                if let Ok(tag) = aes.encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, buf)
                {
                    buf.extend_from_slice(&tag);
                }
            }
            #[cfg(not(target_family = "wasm"))]
            Aead::Ring(key) => {
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                if let Ok(tag) =
                    key.seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf)
                {
                    buf.extend_from_slice(tag.as_ref());
                }
            }
        }
    }

    /// Authenticates and decrypts `buf` (a sealed segment, tag last) in place, leaving the
    /// plaintext. On failure `buf` is unspecified and the error says nothing more.
    pub fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), Error> {
        let fail = Error::Decrypt { stripe: index };
        let body = buf.len().checked_sub(TAG_LEN).ok_or(Error::Decrypt { stripe: index })?;
        let tag: [u8; TAG_LEN] = buf
            .get(body..)
            .and_then(|t| t.try_into().ok())
            .ok_or(Error::Decrypt { stripe: index })?;
        buf.truncate(body);
        let aad = segment_aad(&self.file_id, index, last);
        let nonce = segment_nonce(index);
        match &self.aead {
            Aead::Reference(aes) => aes
                .decrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    &aad,
                    buf,
                    &Tag::clone_from_slice(&tag),
                )
                .map_err(|_| fail),
            #[cfg(not(target_family = "wasm"))]
            Aead::Ring(key) => key
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(tag),
                    buf,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| fail),
        }
    }

    /// The file this cipher seals for.
    pub fn file_id(&self) -> FileId {
        self.file_id
    }
}

impl fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentCipher").field("file_id", &self.file_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> SegmentCipher {
        SegmentCipher::new(&FileKey::from_bytes([7; 32]), FileId([9; 16]))
    }

    #[test]
    fn seal_open_round_trip() {
        let c = cipher();
        let mut buf = b"hello segment".to_vec();
        c.seal(3, false, &mut buf);
        assert_eq!(buf.len(), 13 + TAG_LEN);
        c.open(3, false, &mut buf).unwrap();
        assert_eq!(buf, b"hello segment");
    }

    #[test]
    fn position_file_and_last_flag_are_bound() {
        let c = cipher();
        let mut sealed = b"segment".to_vec();
        c.seal(1, false, &mut sealed);
        assert!(matches!(c.open(2, false, &mut sealed.clone()), Err(Error::Decrypt { stripe: 2 })));
        assert!(c.open(1, true, &mut sealed.clone()).is_err());
        let other = SegmentCipher::new(&FileKey::from_bytes([7; 32]), FileId([8; 16]));
        assert!(other.open(1, false, &mut sealed.clone()).is_err());
        let wrong_key = SegmentCipher::new(&FileKey::from_bytes([6; 32]), FileId([9; 16]));
        assert!(wrong_key.open(1, false, &mut sealed.clone()).is_err());
        assert!(c.open(1, false, &mut vec![0; 5]).is_err());
    }

    #[test]
    fn fast_and_reference_ciphers_agree() {
        let (key, file_id) = (FileKey::from_bytes([3; 32]), FileId([4; 16]));
        let (fast, reference) =
            (SegmentCipher::new(&key, file_id), SegmentCipher::reference(&key, file_id));
        for len in [0usize, 1, 15, 16, 17, 255, 4096, 65_537] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for (index, last) in [(0, false), (7, true), (u64::MAX, false)] {
                let (mut a, mut b) = (plain.clone(), plain.clone());
                fast.seal(index, last, &mut a);
                reference.seal(index, last, &mut b);
                assert_eq!(a, b, "the same sealed bytes for {len} bytes");
                let mut flipped = a.clone();
                if let Some(byte) = flipped.last_mut() {
                    *byte ^= 1;
                }
                assert!(fast.open(index, last, &mut flipped.clone()).is_err());
                assert!(reference.open(index, last, &mut flipped).is_err());
                fast.open(index, last, &mut b).unwrap();
                reference.open(index, last, &mut a).unwrap();
                assert_eq!((&a, &b), (&plain, &plain));
            }
        }
    }

    #[test]
    fn key_is_not_printed() {
        assert_eq!(format!("{:?}", FileKey::from_bytes([1; 32])), "FileKey(..)");
    }
}

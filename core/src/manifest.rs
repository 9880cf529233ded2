//! The manifest: a file's signed map of shards, with its name and type sealed inside.
//!
//! Binary format, version 1 (integers big-endian):
//!
//! ```text
//! magic "SWMF" | version u8 = 1
//! public:  file id [16] | k u16 | m u16 | segment size u32 | size u64
//!          shard ids [stripes × (k + m)][32]     (stripe by stripe, data shards first)
//! sealed:  nonce [12] | length u32 | AES-256-GCM(name len u16 | name | type len u16 | type |
//!          plaintext BLAKE3 [32]), associated data = every byte before the nonce
//! signer:  Ed25519 public key [32] | signature [64] over "shardweb manifest v1" followed by
//!          BLAKE3 of every byte before the signature
//! ```
//!
//! The number of stripes and every length are derived from the parameters and size
//! ([`Layout`]), so a manifest cannot contradict itself. The manifest id is BLAKE3 of the whole
//! encoding. Holders read the public part to verify and repair shards without the key.

use std::fmt;
use std::str::FromStr;

use aes_gcm::Nonce;
use aes_gcm::aead::AeadInPlace;
use bytes::Bytes;
/// The Ed25519 key that signs manifests (a node's libp2p identity key).
pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::codec::{self, Decoder, Encoded, FILE_ID_LEN, FileId, FileKey, Layout, Params, ShardId};
use crate::wire::{Reader, Truncated};

/// The largest manifest accepted or produced, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// The longest file name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest MIME type, in bytes.
pub const MAX_TYPE_BYTES: usize = 255;
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;

const MAGIC: &[u8; 4] = b"SWMF";
const SIGNATURE_DOMAIN: &[u8] = b"shardweb manifest v1";
const HEADER_LEN: usize = 4 + 1 + FILE_ID_LEN + 2 + 2 + 4 + 8;
const SEALED_NONCE_LEN: usize = 12;
const SEALED_OVERHEAD: usize = 2 + 2 + 32 + codec::TAG_LEN;
const MAX_SEALED_LEN: usize = SEALED_OVERHEAD + MAX_NAME_BYTES + MAX_TYPE_BYTES;
const TRAILER_LEN: usize = 32 + 64;

/// What is wrong with a manifest, or with opening it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Longer than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// Ends before the named field.
    #[error("manifest is truncated: it ends inside the {field}")]
    Truncated { field: &'static str },
    /// Does not start with the manifest magic bytes.
    #[error("not a shardweb manifest (bad magic bytes)")]
    BadMagic,
    /// A format version this code does not read.
    #[error(
        "unsupported manifest format version {version} (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion { version: u8 },
    /// Coding parameters out of range.
    #[error("manifest has invalid parameters: {0}")]
    Params(#[source] codec::Error),
    /// The sealed part's length is out of range.
    #[error("manifest's sealed part is {len} bytes, outside {min}..={max}")]
    SealedLength { len: usize, min: usize, max: usize },
    /// Bytes after the signature.
    #[error("manifest has {extra} unexpected bytes after its signature")]
    TrailingBytes { extra: usize },
    /// The signer's key is not a valid Ed25519 point.
    #[error("manifest signer key is invalid")]
    BadSignerKey,
    /// The signature does not verify: the manifest was altered or never signed.
    #[error("manifest signature does not verify: the manifest was altered or not signed")]
    BadSignature,
    /// The bytes do not hash to the manifest id they were fetched under.
    #[error("manifest does not match its id {expected}")]
    IdMismatch { expected: ManifestId },
    /// The sealed part does not open: the link's key is not this file's key.
    #[error("wrong key for this file")]
    WrongKey,
    /// The sealed part opened but its contents are malformed.
    #[error("manifest's sealed part is malformed: {reason}")]
    MalformedSealed { reason: &'static str },
    /// A file name over [`MAX_NAME_BYTES`].
    #[error("file name is {len} bytes, over the limit of {max}")]
    NameTooLong { len: usize, max: usize },
    /// A MIME type over [`MAX_TYPE_BYTES`].
    #[error("MIME type is {len} bytes, over the limit of {max}")]
    TypeTooLong { len: usize, max: usize },
    /// The encoded file does not fit its own parameters (a bug in the caller).
    #[error("encoded file has {ids} shard ids, expected {expected}")]
    ShardCount { ids: usize, expected: usize },
    /// Randomness for the sealed part's nonce failed.
    #[error(transparent)]
    Codec(#[from] codec::Error),
}

impl From<Truncated> for Error {
    fn from(t: Truncated) -> Self {
        Error::Truncated { field: t.field }
    }
}

/// The BLAKE3 hash of a manifest's encoding: the name a link carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub [u8; 32]);

impl ManifestId {
    /// The id of these manifest bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for ManifestId {
    /// Unpadded base64url, as in links.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::BASE64URL_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestId({self})")
    }
}

impl FromStr for ManifestId {
    type Err = crate::link::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::link::decode_part(s, crate::link::Part::ManifestId).map(Self)
    }
}

/// The private facts about a file, sealed inside its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// The file's name, as it should be saved.
    pub name: String,
    /// Its MIME type; empty when unknown.
    pub mime: String,
}

/// What opening a manifest with the right key reveals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Name and type.
    pub meta: FileMeta,
    /// BLAKE3 of the whole plaintext.
    pub plaintext_hash: [u8; 32],
}

/// A verified manifest: well-formed, within limits, and signed by its signer.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    bytes: Bytes,
    id: ManifestId,
    file_id: FileId,
    layout: Layout,
    shard_ids: Vec<ShardId>,
    sealed_start: usize,
    signer: VerifyingKey,
}

/// The most stripes one manifest can describe with these parameters.
pub fn max_stripes(params: Params) -> u64 {
    let room =
        MAX_MANIFEST_BYTES - HEADER_LEN - SEALED_NONCE_LEN - 4 - MAX_SEALED_LEN - TRAILER_LEN;
    (room / (32 * params.shards())) as u64
}

impl Manifest {
    /// Writes and signs the manifest of an encoded file, sealing `meta` under `key`.
    pub fn create(
        encoded: &Encoded,
        meta: &FileMeta,
        key: &FileKey,
        signer: &SigningKey,
    ) -> Result<Self, Error> {
        let mut nonce = [0u8; SEALED_NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(codec::Error::Random)?;
        Self::create_with_nonce(encoded, meta, key, signer, nonce)
    }

    /// [`Manifest::create`] with a chosen nonce for the sealed part, for golden vectors.
    /// Never reuse a nonce under one key.
    #[doc(hidden)]
    pub fn create_with_nonce(
        encoded: &Encoded,
        meta: &FileMeta,
        key: &FileKey,
        signer: &SigningKey,
        nonce: [u8; SEALED_NONCE_LEN],
    ) -> Result<Self, Error> {
        if meta.name.len() > MAX_NAME_BYTES {
            return Err(Error::NameTooLong { len: meta.name.len(), max: MAX_NAME_BYTES });
        }
        if meta.mime.len() > MAX_TYPE_BYTES {
            return Err(Error::TypeTooLong { len: meta.mime.len(), max: MAX_TYPE_BYTES });
        }
        let layout = encoded.layout();
        let expected = shard_count(&layout)?;
        if encoded.shard_ids.len() != expected {
            return Err(Error::ShardCount { ids: encoded.shard_ids.len(), expected });
        }
        let p = encoded.params;
        let mut out = Vec::with_capacity(HEADER_LEN + expected * 32 + 256);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&encoded.file_id.0);
        #[allow(clippy::cast_possible_truncation)] // validated by Params
        {
            out.extend_from_slice(&(p.k() as u16).to_be_bytes());
            out.extend_from_slice(&(p.m() as u16).to_be_bytes());
            out.extend_from_slice(&(p.segment_size() as u32).to_be_bytes());
        }
        out.extend_from_slice(&encoded.size.to_be_bytes());
        encoded.shard_ids.iter().for_each(|id| out.extend_from_slice(&id.0));

        let mut sealed = Vec::with_capacity(MAX_SEALED_LEN);
        for field in [meta.name.as_bytes(), meta.mime.as_bytes()] {
            #[allow(clippy::cast_possible_truncation)] // checked above
            sealed.extend_from_slice(&(field.len() as u16).to_be_bytes());
            sealed.extend_from_slice(field);
        }
        sealed.extend_from_slice(&encoded.plaintext_hash);
        let tag = key
            .manifest_cipher()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &out, &mut sealed)
            .map_err(|_| Error::MalformedSealed { reason: "sealing failed" })?;
        sealed.extend_from_slice(&tag);
        out.extend_from_slice(&nonce);
        #[allow(clippy::cast_possible_truncation)] // ≤ MAX_SEALED_LEN
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);

        out.extend_from_slice(signer.verifying_key().as_bytes());
        let signature = signer.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        Self::decode(&out)
    }

    /// Parses and verifies a manifest: structure, limits and signature. Says what is wrong
    /// with a typed error; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::TooLarge { len: bytes.len(), max: MAX_MANIFEST_BYTES });
        }
        let mut r = Reader::new(bytes);
        if r.take(4, "magic")? != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = r.u8("version")?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        let file_id = FileId(r.array("file id")?);
        let k = r.u16("parameters")?;
        let m = r.u16("parameters")?;
        let segment_size = r.u32("parameters")?;
        let size = r.u64("file size")?;
        let params = Params::new(k.into(), m.into())
            .and_then(|p| p.with_segment_size(segment_size as usize))
            .map_err(Error::Params)?;
        let layout = Layout::new(params, size);
        let stripes = layout.stripes();
        if stripes > max_stripes(params) {
            let max = max_stripes(params);
            return Err(Error::Params(codec::Error::TooManyStripes { stripes, max }));
        }
        let count = shard_count(&layout)?;
        let shard_ids = r
            .take(count * 32, "shard ids")?
            .chunks_exact(32)
            .map(|c| ShardId(c.try_into().unwrap_or([0; 32])))
            .collect();
        let sealed_start = r.pos();
        r.take(SEALED_NONCE_LEN, "sealed part")?;
        let sealed_len = r.u32("sealed part")? as usize;
        if !(SEALED_OVERHEAD..=MAX_SEALED_LEN).contains(&sealed_len) {
            let (min, max) = (SEALED_OVERHEAD, MAX_SEALED_LEN);
            return Err(Error::SealedLength { len: sealed_len, min, max });
        }
        r.take(sealed_len, "sealed part")?;
        let signer =
            VerifyingKey::from_bytes(&r.array("signer key")?).map_err(|_| Error::BadSignerKey)?;
        let signed_len = r.pos();
        let signature = Signature::from_bytes(&r.array("signature")?);
        if r.remaining() != 0 {
            return Err(Error::TrailingBytes { extra: r.remaining() });
        }
        let body = bytes.get(..signed_len).ok_or(Error::Truncated { field: "signature" })?;
        signer.verify_strict(&signed_message(body), &signature).map_err(|_| Error::BadSignature)?;
        Ok(Self {
            bytes: Bytes::copy_from_slice(bytes),
            id: ManifestId::of(bytes),
            file_id,
            layout,
            shard_ids,
            sealed_start,
            signer,
        })
    }

    /// Parses a manifest fetched under `id`, checking that its bytes hash to that id first.
    pub fn decode_as(id: &ManifestId, bytes: &[u8]) -> Result<Self, Error> {
        if ManifestId::of(bytes) != *id {
            return Err(Error::IdMismatch { expected: *id });
        }
        Self::decode(bytes)
    }

    /// The canonical encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// BLAKE3 of the encoding.
    pub fn id(&self) -> ManifestId {
        self.id
    }

    /// The file's public id.
    pub fn file_id(&self) -> FileId {
        self.file_id
    }

    /// Parameters and size, from which every length follows.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Every shard id, stripe by stripe, k + m per stripe.
    pub fn shard_ids(&self) -> &[ShardId] {
        &self.shard_ids
    }

    /// The uploader's Ed25519 public key (its libp2p identity).
    pub fn signer(&self) -> [u8; 32] {
        self.signer.to_bytes()
    }

    /// Opens the sealed part with the file key. A wrong key is [`Error::WrongKey`].
    pub fn open(&self, key: &FileKey) -> Result<Opened, Error> {
        let aad = self.bytes.get(..self.sealed_start).ok_or(Error::WrongKey)?;
        let nonce_end = self.sealed_start + SEALED_NONCE_LEN;
        let nonce = self.bytes.get(self.sealed_start..nonce_end).ok_or(Error::WrongKey)?;
        let len_bytes: [u8; 4] = array_at(&self.bytes, nonce_end)?;
        let body_start = nonce_end + 4;
        let sealed_len = u32::from_be_bytes(len_bytes) as usize;
        let body = self.bytes.get(body_start..body_start + sealed_len).ok_or(Error::WrongKey)?;
        let (text, tag) = body.split_at(sealed_len - codec::TAG_LEN);
        let mut plain = text.to_vec();
        key.manifest_cipher()
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut plain, tag.into())
            .map_err(|_| Error::WrongKey)?;
        parse_sealed(&plain)
    }

    /// A decoder for this file's shards, after checking the key against the sealed part.
    pub fn decoder(&self, key: &FileKey) -> Result<Decoder, Error> {
        self.open(key)?;
        Ok(Decoder::new(self.layout, self.file_id, self.shard_ids.clone(), key))
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.id)
            .field("file_id", &self.file_id)
            .field("layout", &self.layout)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

fn shard_count(layout: &Layout) -> Result<usize, Error> {
    usize::try_from(layout.stripes())
        .ok()
        .and_then(|s| s.checked_mul(layout.params().shards()))
        .ok_or(Error::TooLarge { len: usize::MAX, max: MAX_MANIFEST_BYTES })
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(blake3::hash(body).as_bytes());
    message
}

fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], Error> {
    bytes.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or(Error::WrongKey)
}

fn parse_sealed(plain: &[u8]) -> Result<Opened, Error> {
    let mut r = Reader::new(plain);
    let malformed = |reason| move |_| Error::MalformedSealed { reason };
    let name_len = r.u16("name").map_err(malformed("truncated name"))?;
    let name = r.take(name_len.into(), "name").map_err(malformed("truncated name"))?;
    let type_len = r.u16("type").map_err(malformed("truncated type"))?;
    let mime = r.take(type_len.into(), "type").map_err(malformed("truncated type"))?;
    let plaintext_hash = r.array("hash").map_err(malformed("truncated hash"))?;
    if r.remaining() != 0 {
        return Err(Error::MalformedSealed { reason: "trailing bytes" });
    }
    let text = |b: &[u8], reason| {
        String::from_utf8(b.to_vec()).map_err(|_| Error::MalformedSealed { reason })
    };
    let meta =
        FileMeta { name: text(name, "name is not UTF-8")?, mime: text(mime, "type is not UTF-8")? };
    Ok(Opened { meta, plaintext_hash })
}

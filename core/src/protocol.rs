//! The wire messages of shardweb's request-response protocols, with their hard limits.
//!
//! Every message is one binary frame per stream direction: a kind byte, then fields in
//! big-endian. Decoding never panics and never allocates more than the frame's own length;
//! anything malformed, oversized or trailing is a typed [`Error`]. The formats are specified in
//! `docs/formats.md` and pinned by golden vectors.

mod codec;
pub mod http_put;
mod manifest;
mod shard;

pub use codec::{FrameCodec, Incoming, MANIFEST, ManifestCodec, SHARD, ShardCodec};
pub use manifest::{ManifestOutcome, ManifestRequest, ManifestResponse};
pub use shard::{PutOutcome, ShardRequest, ShardResponse, ShardStatus};

use crate::wire::Truncated;

/// The shard protocol: put, get and has for a batch of shard ids.
pub const SHARD_PROTOCOL: &str = "/shardweb/shard/1";
/// The manifest protocol: put and get whole manifests.
pub const MANIFEST_PROTOCOL: &str = "/shardweb/manifest/1";
/// Where a relay serves each shard it holds over HTTP: this path, then the shard id in
/// lowercase hex. A shard is public ciphertext named by its hash, so anyone may read it; the
/// reader checks the bytes against the id as it would a libp2p reply.
pub const SHARD_HTTP_PATH: &str = "/api/shards/";
/// Where a relay serves several shards in one HTTP response: this path, then their ids
/// joined by commas ([`batch_path`]). The body is the get reply frame of the shard protocol,
/// one status per id in order, as libp2p would carry it. One request per stripe instead of
/// one per shard spares the browser, its network process and the relay a request's fixed
/// cost for each shard.
pub const SHARD_BATCH_HTTP_PATH: &str = "/api/shard-batch/";
/// The most ids in one HTTP batch: a URL of some 4 KiB.
pub const MAX_HTTP_BATCH: usize = 64;

/// The largest shard accepted on the wire. A 4 MiB segment makes shards of at most 4 MiB + 16
/// bytes (k = 1); larger segments need k large enough to keep shards under this.
pub const MAX_SHARD_BYTES: usize = 16 << 20;
/// The largest frame in either direction: one put or get batch.
pub const MAX_FRAME_BYTES: usize = 32 << 20;
/// The most ids in one get or has request, or shards in one put.
pub const MAX_BATCH: usize = 1024;
/// The longest error message a peer may send.
pub const MAX_ERROR_MESSAGE: usize = 256;

/// The path segment naming `ids` in an HTTP batch (see [`SHARD_BATCH_HTTP_PATH`]).
pub fn batch_path(ids: &[crate::ShardId]) -> String {
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// The ids an HTTP batch's path segment names: 1 to [`MAX_HTTP_BATCH`] shard ids, each 64
/// lowercase hex digits, joined by commas.
pub fn parse_batch_path(segment: &str) -> Result<Vec<crate::ShardId>, BadBatchPath> {
    let ids: Vec<crate::ShardId> = (segment.split(',').take(MAX_HTTP_BATCH + 1))
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| BadBatchPath)?;
    if ids.len() > MAX_HTTP_BATCH {
        return Err(BadBatchPath);
    }
    Ok(ids)
}

/// A batch path that does not name 1 to [`MAX_HTTP_BATCH`] shard ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a batch names 1 to {MAX_HTTP_BATCH} shard ids of 64 lowercase hex digits, joined by commas"
)]
pub struct BadBatchPath;

/// A wire message: one frame per stream direction.
pub trait Message: Sized {
    /// The frame for this message.
    fn encode(&self) -> Vec<u8>;
    /// The frame in pieces to write one after another; large payloads are shared, not copied.
    fn frame(&self) -> Frame {
        Frame { pieces: Vec::new(), head: self.encode() }
    }
    /// Parses a frame; shard and manifest bytes share `frame`'s allocation.
    fn decode(frame: bytes::Bytes) -> Result<Self, Error>;
}

/// A frame being built in pieces: fields go into small buffers, and every shard's bytes are a
/// piece of their own, shared with the shard rather than copied.
#[derive(Debug, Default)]
pub struct Frame {
    pieces: Vec<bytes::Bytes>,
    head: Vec<u8>,
}

impl Frame {
    fn shard(&mut self, bytes: &bytes::Bytes) {
        if !self.head.is_empty() {
            self.pieces.push(std::mem::take(&mut self.head).into());
        }
        self.pieces.push(bytes.clone());
    }

    /// The pieces in order.
    pub fn into_pieces(mut self) -> Vec<bytes::Bytes> {
        if !self.head.is_empty() {
            self.pieces.push(self.head.into());
        }
        self.pieces
    }

    /// The whole frame in one buffer.
    pub fn into_vec(self) -> Vec<u8> {
        self.into_pieces().concat()
    }
}

macro_rules! message {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn encode(&self) -> Vec<u8> {
                <$t>::encode(self)
            }

            fn decode(frame: bytes::Bytes) -> Result<Self, Error> {
                <$t>::decode(frame)
            }
        }
    )*};
}
message!(ManifestRequest, ManifestResponse);

macro_rules! message_in_pieces {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn encode(&self) -> Vec<u8> {
                <$t>::encode(self)
            }

            fn frame(&self) -> Frame {
                <$t>::frame(self)
            }

            fn decode(frame: bytes::Bytes) -> Result<Self, Error> {
                <$t>::decode(frame)
            }
        }
    )*};
}
message_in_pieces!(ShardRequest, ShardResponse);

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Longer than [`MAX_FRAME_BYTES`].
    #[error("message is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// Ended inside a field.
    #[error("message is truncated: it ends inside the {field}")]
    Truncated { field: &'static str },
    /// An unknown kind byte.
    #[error("unknown message kind {kind:#04x}")]
    UnknownKind { kind: u8 },
    /// A batch over [`MAX_BATCH`].
    #[error("batch of {count} is over the limit of {max}")]
    BatchTooLarge { count: usize, max: usize },
    /// A shard over [`MAX_SHARD_BYTES`].
    #[error("shard of {len} bytes is over the limit of {max}")]
    ShardTooLarge { len: usize, max: usize },
    /// An out-of-range value for the named field.
    #[error("invalid {field}: {value}")]
    InvalidValue { field: &'static str, value: u64 },
    /// Bytes after the end of the message.
    #[error("{extra} unexpected bytes after the message")]
    TrailingBytes { extra: usize },
}

impl From<Truncated> for Error {
    fn from(t: Truncated) -> Self {
        Error::Truncated { field: t.field }
    }
}

/// Why a peer refused a whole request, sent back in place of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request did not decode.
    Malformed,
    /// The request was over a size limit.
    TooLarge,
    /// The peer sent too many requests or bytes too fast.
    RateLimited,
    /// The relay requires a write token this peer did not present.
    Unauthorized,
    /// The node failed internally; the detail stays in its logs.
    Internal,
}

impl ErrorCode {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::TooLarge => 2,
            ErrorCode::RateLimited => 3,
            ErrorCode::Unauthorized => 4,
            ErrorCode::Internal => 5,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Self, Error> {
        Ok(match b {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::TooLarge,
            3 => ErrorCode::RateLimited,
            4 => ErrorCode::Unauthorized,
            5 => ErrorCode::Internal,
            _ => return Err(Error::InvalidValue { field: "error code", value: b.into() }),
        })
    }
}

/// A request refused whole: a code and a short message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// A short explanation, at most [`MAX_ERROR_MESSAGE`] bytes.
    pub message: String,
}

impl Refusal {
    /// The refusal for a request that could not be read.
    pub fn for_error(e: &Error) -> Self {
        let code = match e {
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        };
        Refusal { code, message: e.to_string() }
    }
}

const KIND_ERROR: u8 = 0xff;

fn check_frame(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge { len: bytes.len(), max: MAX_FRAME_BYTES });
    }
    Ok(())
}

fn check_count(count: usize) -> Result<usize, Error> {
    if count > MAX_BATCH {
        return Err(Error::BatchTooLarge { count, max: MAX_BATCH });
    }
    Ok(count)
}

fn finish(r: &crate::wire::Reader<'_>) -> Result<(), Error> {
    match r.remaining() {
        0 => Ok(()),
        extra => Err(Error::TrailingBytes { extra }),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    #[allow(clippy::cast_possible_truncation)] // every length is bounded far below 4 GiB
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    #[allow(clippy::cast_possible_truncation)] // ≤ MAX_BATCH
    out.extend_from_slice(&(count as u16).to_be_bytes());
}

fn encode_refusal(out: &mut Vec<u8>, refusal: &Refusal) {
    out.push(KIND_ERROR);
    out.push(refusal.code.to_byte());
    let mut end = refusal.message.len().min(MAX_ERROR_MESSAGE);
    while !refusal.message.is_char_boundary(end) {
        end -= 1;
    }
    let message = refusal.message.get(..end).unwrap_or_default();
    put_count(out, message.len());
    out.extend_from_slice(message.as_bytes());
}

fn decode_refusal(r: &mut crate::wire::Reader<'_>) -> Result<Refusal, Error> {
    let code = ErrorCode::from_byte(r.u8("error code")?)?;
    let len = usize::from(r.u16("error message")?);
    if len > MAX_ERROR_MESSAGE {
        return Err(Error::InvalidValue { field: "error message length", value: len as u64 });
    }
    let message = String::from_utf8_lossy(r.take(len, "error message")?).into_owned();
    Ok(Refusal { code, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShardId;

    /// A batch path names its ids in order and reads back as them; anything else is refused.
    #[test]
    fn batch_paths_name_their_ids_in_order() {
        let ids: Vec<ShardId> = (0..3u8).map(|i| ShardId::of(&[i])).collect();
        let path = batch_path(&ids);
        assert_eq!(path.len(), 3 * 64 + 2);
        assert_eq!(path.split(',').next(), Some(ids[0].to_string().as_str()));
        assert_eq!(parse_batch_path(&path), Ok(ids.clone()));
        let most: Vec<ShardId> =
            (0..MAX_HTTP_BATCH).map(|i| ShardId::of(&i.to_be_bytes())).collect();
        assert_eq!(parse_batch_path(&batch_path(&most)), Ok(most.clone()));
        let one = ids[0].to_string();
        for bad in [
            String::new(),
            format!("{one},"),
            format!(",{one}"),
            format!("{one},,{one}"),
            one.to_uppercase(),
            format!("{one} "),
            one[1..].to_owned(),
            format!("{},{one}", batch_path(&most)),
        ] {
            assert_eq!(parse_batch_path(&bad), Err(BadBatchPath), "{bad:?}");
        }
    }
}

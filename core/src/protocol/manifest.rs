//! `/shardweb/manifest/1`: put and get whole manifests.
//!
//! ```text
//! request   0x01 put  length u32, manifest bytes
//!           0x02 get  manifest id [32]
//! response  0x81 put  outcome u8 (0 stored, 1 already held, 2 no space, 3 invalid)
//!           0x82 get  0 missing | 1 found, length u32, manifest bytes
//!           0xff refused  code u8, length u16, message
//! ```

use bytes::Bytes;

use super::{
    Error, KIND_ERROR, Refusal, check_frame, decode_refusal, encode_refusal, finish, put_len,
};
use crate::manifest::{MAX_MANIFEST_BYTES, ManifestId};
use crate::wire::Reader;

const PUT: u8 = 0x01;
const GET: u8 = 0x02;
const PUT_REPLY: u8 = 0x81;
const GET_REPLY: u8 = 0x82;

/// A request on the manifest protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRequest {
    /// Keep this manifest (the receiver verifies it).
    Put(Bytes),
    /// Send the manifest with this id.
    Get(ManifestId),
}

/// What became of a manifest put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestOutcome {
    /// Written and durable.
    Stored,
    /// Already held.
    AlreadyHeld,
    /// Refused: quota or storage full.
    NoSpace,
    /// Refused: not a valid, signed manifest.
    Invalid,
}

/// A response on the manifest protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestResponse {
    /// The outcome of a put.
    Put(ManifestOutcome),
    /// The manifest's bytes (verify against the id before use), or `None` when not held.
    Get(Option<Bytes>),
    /// The whole request was refused.
    Refused(Refusal),
}

fn read_manifest(r: &mut Reader<'_>, frame: &Bytes) -> Result<Bytes, Error> {
    let len = r.u32("manifest length")? as usize;
    if len > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge { len, max: MAX_MANIFEST_BYTES });
    }
    let start = r.pos();
    r.take(len, "manifest")?;
    Ok(frame.slice(start..start + len))
}

impl ManifestRequest {
    /// The frame for this request.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ManifestRequest::Put(bytes) => {
                let mut out = Vec::with_capacity(5 + bytes.len());
                out.push(PUT);
                put_len(&mut out, bytes.len());
                out.extend_from_slice(bytes);
                out
            }
            ManifestRequest::Get(id) => [&[GET][..], &id.0].concat(),
        }
    }

    /// Parses a request frame.
    pub fn decode(frame: Bytes) -> Result<Self, Error> {
        check_frame(&frame)?;
        let mut r = Reader::new(&frame);
        let request = match r.u8("kind")? {
            PUT => ManifestRequest::Put(read_manifest(&mut r, &frame)?),
            GET => ManifestRequest::Get(ManifestId(r.array("manifest id")?)),
            kind => return Err(Error::UnknownKind { kind }),
        };
        finish(&r)?;
        Ok(request)
    }
}

impl ManifestResponse {
    /// The frame for this response.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ManifestResponse::Put(outcome) => {
                out.push(PUT_REPLY);
                out.push(match outcome {
                    ManifestOutcome::Stored => 0,
                    ManifestOutcome::AlreadyHeld => 1,
                    ManifestOutcome::NoSpace => 2,
                    ManifestOutcome::Invalid => 3,
                });
            }
            ManifestResponse::Get(None) => out.extend_from_slice(&[GET_REPLY, 0]),
            ManifestResponse::Get(Some(bytes)) => {
                out.reserve(6 + bytes.len());
                out.extend_from_slice(&[GET_REPLY, 1]);
                put_len(&mut out, bytes.len());
                out.extend_from_slice(bytes);
            }
            ManifestResponse::Refused(refusal) => encode_refusal(&mut out, refusal),
        }
        out
    }

    /// Parses a response frame.
    pub fn decode(frame: Bytes) -> Result<Self, Error> {
        check_frame(&frame)?;
        let mut r = Reader::new(&frame);
        let response = match r.u8("kind")? {
            PUT_REPLY => ManifestResponse::Put(match r.u8("outcome")? {
                0 => ManifestOutcome::Stored,
                1 => ManifestOutcome::AlreadyHeld,
                2 => ManifestOutcome::NoSpace,
                3 => ManifestOutcome::Invalid,
                v => return Err(Error::InvalidValue { field: "outcome", value: v.into() }),
            }),
            GET_REPLY => match r.u8("found")? {
                0 => ManifestResponse::Get(None),
                1 => ManifestResponse::Get(Some(read_manifest(&mut r, &frame)?)),
                v => return Err(Error::InvalidValue { field: "found", value: v.into() }),
            },
            KIND_ERROR => ManifestResponse::Refused(decode_refusal(&mut r)?),
            kind => return Err(Error::UnknownKind { kind }),
        };
        finish(&r)?;
        Ok(response)
    }
}

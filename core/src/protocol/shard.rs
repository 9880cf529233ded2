//! `/shardweb/shard/1`: put, get and has for a batch of shards.
//!
//! ```text
//! request   0x01 put  count u16, count × (id [32], length u32, bytes)
//!           0x02 get  count u16, count × id [32]
//!           0x03 has  count u16, count × id [32]
//! response  0x81 put  count u16, count × outcome u8
//!           0x82 get  count u16, count × (0 missing | 1 found, length u32, bytes | 2 deferred)
//!           0x83 has  count u16, ceil(count / 8) bitmap bytes, bit i (LSB first) = held
//!           0xff refused  code u8, length u16, message
//! ```

use bytes::Bytes;

use super::{
    Error, Frame, KIND_ERROR, MAX_SHARD_BYTES, Refusal, check_count, check_frame, decode_refusal,
    encode_refusal, finish, put_count, put_len,
};
use crate::codec::ShardId;
use crate::wire::Reader;

const PUT: u8 = 0x01;
const GET: u8 = 0x02;
const HAS: u8 = 0x03;
const PUT_REPLY: u8 = 0x81;
const GET_REPLY: u8 = 0x82;
const HAS_REPLY: u8 = 0x83;

/// A request on the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardRequest {
    /// Store these shards; each is verified against its id by the receiver.
    Put(Vec<(ShardId, Bytes)>),
    /// Send these shards.
    Get(Vec<ShardId>),
    /// Say which of these shards are held.
    Has(Vec<ShardId>),
}

/// What became of one shard of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// Written and durable.
    Stored,
    /// Already held; nothing written.
    AlreadyHeld,
    /// Refused: the sender's quota or the node's storage is full.
    NoSpace,
    /// Refused: the bytes do not hash to the id.
    Mismatch,
    /// The node failed to store it; try another.
    Failed,
}

impl std::fmt::Display for PutOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PutOutcome::Stored => "stored",
            PutOutcome::AlreadyHeld => "already held",
            PutOutcome::NoSpace => "no space (quota or storage full)",
            PutOutcome::Mismatch => "bytes do not match the shard id",
            PutOutcome::Failed => "storage failed",
        })
    }
}

/// One shard of a get reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStatus {
    /// The shard's bytes (verify them against the id before use).
    Found(Bytes),
    /// Not held here.
    Missing,
    /// Held, but over this reply's size budget: ask again.
    Deferred,
}

/// A response on the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardResponse {
    /// One outcome per shard put, in order.
    Put(Vec<PutOutcome>),
    /// One status per id asked, in order.
    Get(Vec<ShardStatus>),
    /// One flag per id asked, in order.
    Has(Vec<bool>),
    /// The whole request was refused.
    Refused(Refusal),
}

impl ShardRequest {
    /// The frame for this request.
    pub fn encode(&self) -> Vec<u8> {
        self.frame().into_vec()
    }

    /// The frame for this request in pieces, sharing the shards' bytes.
    pub fn frame(&self) -> Frame {
        let mut f = Frame::default();
        match self {
            ShardRequest::Put(shards) => {
                f.head.push(PUT);
                put_count(&mut f.head, shards.len());
                for (id, bytes) in shards {
                    f.head.extend_from_slice(id.as_bytes());
                    put_len(&mut f.head, bytes.len());
                    f.shard(bytes);
                }
            }
            ShardRequest::Get(ids) | ShardRequest::Has(ids) => {
                f.head.push(if matches!(self, ShardRequest::Get(_)) { GET } else { HAS });
                put_count(&mut f.head, ids.len());
                ids.iter().for_each(|id| f.head.extend_from_slice(id.as_bytes()));
            }
        }
        f
    }

    /// Parses a request frame; shard bytes share `frame`'s allocation.
    pub fn decode(frame: Bytes) -> Result<Self, Error> {
        check_frame(&frame)?;
        let mut r = Reader::new(&frame);
        let kind = r.u8("kind")?;
        let count = check_count(r.u16("count")?.into())?;
        let request = match kind {
            PUT => {
                let mut shards = Vec::with_capacity(count.min(r.remaining() / 36));
                for _ in 0..count {
                    let id = ShardId(r.array("shard id")?);
                    let len = r.u32("shard length")? as usize;
                    if len > MAX_SHARD_BYTES {
                        return Err(Error::ShardTooLarge { len, max: MAX_SHARD_BYTES });
                    }
                    let start = r.pos();
                    r.take(len, "shard")?;
                    shards.push((id, frame.slice(start..start + len)));
                }
                ShardRequest::Put(shards)
            }
            GET => ShardRequest::Get(read_ids(&mut r, count)?),
            HAS => ShardRequest::Has(read_ids(&mut r, count)?),
            kind => return Err(Error::UnknownKind { kind }),
        };
        finish(&r)?;
        Ok(request)
    }
}

impl ShardResponse {
    /// The frame for this response.
    pub fn encode(&self) -> Vec<u8> {
        self.frame().into_vec()
    }

    /// The frame for this response in pieces, sharing the shards' bytes.
    pub fn frame(&self) -> Frame {
        let mut f = Frame::default();
        let out = &mut f.head;
        match self {
            ShardResponse::Put(outcomes) => {
                out.push(PUT_REPLY);
                put_count(out, outcomes.len());
                out.extend(outcomes.iter().map(|o| outcome_byte(*o)));
            }
            ShardResponse::Get(statuses) => {
                out.push(GET_REPLY);
                put_count(out, statuses.len());
                for status in statuses {
                    match status {
                        ShardStatus::Missing => f.head.push(0),
                        ShardStatus::Found(bytes) => {
                            f.head.push(1);
                            put_len(&mut f.head, bytes.len());
                            f.shard(bytes);
                        }
                        ShardStatus::Deferred => f.head.push(2),
                    }
                }
                return f;
            }
            ShardResponse::Has(held) => {
                out.push(HAS_REPLY);
                put_count(out, held.len());
                for chunk in held.chunks(8) {
                    let bits = chunk.iter().enumerate().map(|(i, &h)| u8::from(h) << i);
                    out.push(bits.fold(0, |a, b| a | b));
                }
            }
            ShardResponse::Refused(refusal) => encode_refusal(out, refusal),
        }
        f
    }

    /// Parses a response frame; shard bytes share `frame`'s allocation.
    pub fn decode(frame: Bytes) -> Result<Self, Error> {
        check_frame(&frame)?;
        let mut r = Reader::new(&frame);
        let kind = r.u8("kind")?;
        if kind == KIND_ERROR {
            let refusal = decode_refusal(&mut r)?;
            finish(&r)?;
            return Ok(ShardResponse::Refused(refusal));
        }
        let count = check_count(r.u16("count")?.into())?;
        let response = match kind {
            PUT_REPLY => ShardResponse::Put(
                r.take(count, "outcomes")?
                    .iter()
                    .map(|&b| outcome_from(b))
                    .collect::<Result<_, _>>()?,
            ),
            GET_REPLY => {
                let mut statuses = Vec::with_capacity(count.min(r.remaining()));
                for _ in 0..count {
                    statuses.push(match r.u8("status")? {
                        0 => ShardStatus::Missing,
                        1 => {
                            let len = r.u32("shard length")? as usize;
                            if len > MAX_SHARD_BYTES {
                                return Err(Error::ShardTooLarge { len, max: MAX_SHARD_BYTES });
                            }
                            let start = r.pos();
                            r.take(len, "shard")?;
                            ShardStatus::Found(frame.slice(start..start + len))
                        }
                        2 => ShardStatus::Deferred,
                        v => return Err(Error::InvalidValue { field: "status", value: v.into() }),
                    });
                }
                ShardResponse::Get(statuses)
            }
            HAS_REPLY => {
                let bitmap = r.take(count.div_ceil(8), "bitmap")?;
                let held = (0..count)
                    .map(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                    .collect();
                ShardResponse::Has(held)
            }
            kind => return Err(Error::UnknownKind { kind }),
        };
        finish(&r)?;
        Ok(response)
    }
}

fn read_ids(r: &mut Reader<'_>, count: usize) -> Result<Vec<ShardId>, Error> {
    (0..count).map(|_| Ok(ShardId(r.array("shard id")?))).collect()
}

fn outcome_byte(outcome: PutOutcome) -> u8 {
    match outcome {
        PutOutcome::Stored => 0,
        PutOutcome::AlreadyHeld => 1,
        PutOutcome::NoSpace => 2,
        PutOutcome::Mismatch => 3,
        PutOutcome::Failed => 4,
    }
}

fn outcome_from(b: u8) -> Result<PutOutcome, Error> {
    Ok(match b {
        0 => PutOutcome::Stored,
        1 => PutOutcome::AlreadyHeld,
        2 => PutOutcome::NoSpace,
        3 => PutOutcome::Mismatch,
        4 => PutOutcome::Failed,
        v => return Err(Error::InvalidValue { field: "put outcome", value: v.into() }),
    })
}

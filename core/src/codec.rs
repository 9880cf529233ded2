//! The codec: a file becomes stripes of shards and back.
//!
//! Upload runs [`Segmenter`] → [`SegmentCipher::seal`] → [`StripeEncoder::encode`] (which also
//! names every shard by its [`ShardId`]); [`Encoder`] drives the whole sequence. Download runs
//! [`StripeDecoder::add`] (verify) → [`StripeDecoder::decode`] → [`SegmentCipher::open`];
//! [`Decoder`] drives it with a bounded window of stripes. A host may run any step itself, as
//! the browser does with WebCrypto for the seal, using [`segment_nonce`] and [`segment_aad`].

mod decoder;
mod encoder;
mod erasure;
mod layout;
mod params;
mod seal;
mod segment;
mod shard;

pub use decoder::{DEFAULT_WINDOW, Decoder, SealedSegment};
pub use encoder::{Encoded, Encoder};
pub use erasure::{ErasureEngine, RecoveryScratch, Stripe, StripeDecoder, StripeEncoder};
pub use layout::Layout;
pub use params::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MAX_SHARDS, MIN_SEGMENT_SIZE, Params};
pub use seal::{
    FILE_ID_LEN, FileId, FileKey, KEY_LEN, NONCE_LEN, SegmentCipher, TAG_LEN, segment_aad,
    segment_nonce,
};
pub use segment::{Segment, Segmenter};
pub use shard::{MalformedShardId, ShardId, VerifiedShard};

/// What can go wrong while encoding or decoding a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// k data and m parity shards outside 1 ≤ k, 1 ≤ m, k + m ≤ 256.
    #[error("invalid coding parameters k={k}, m={m}: need k ≥ 1, m ≥ 1 and k + m ≤ {MAX_SHARDS}")]
    InvalidParams { k: usize, m: usize },
    /// A segment size outside the supported range.
    #[error(
        "invalid segment size {segment_size} bytes: must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}"
    )]
    InvalidSegmentSize { segment_size: usize },
    /// The file has more stripes than one manifest can describe.
    #[error("file too large: {stripes} stripes exceed the limit of {max} for these parameters")]
    TooManyStripes { stripes: u64, max: u64 },
    /// A shard index outside 0..k+m.
    #[error("no shard {index} in stripe {stripe}: stripes have {shards} shards")]
    NoSuchShard { stripe: u64, index: usize, shards: usize },
    /// A stripe index outside the file.
    #[error("no stripe {stripe}: the file has {stripes} stripes")]
    NoSuchStripe { stripe: u64, stripes: u64 },
    /// A shard with the wrong length for its stripe.
    #[error("shard {index} of stripe {stripe} is {actual} bytes, expected {expected}")]
    ShardLength { stripe: u64, index: usize, expected: usize, actual: usize },
    /// A shard whose bytes do not hash to its id: it was corrupted or substituted.
    #[error(
        "shard {index} of stripe {stripe} does not match its id {expected} (hashes to {actual})"
    )]
    ShardMismatch { stripe: u64, index: usize, expected: ShardId, actual: ShardId },
    /// Fewer than k verified shards of a stripe.
    #[error("not enough shards for stripe {stripe}: found {found} good of the {needed} needed")]
    NotEnoughShards { stripe: u64, found: usize, needed: usize },
    /// A stripe outside the decoder's window of stripes in flight.
    #[error("stripe {stripe} is outside the decoding window {next}..{end}")]
    OutsideWindow { stripe: u64, next: u64, end: u64 },
    /// A segment failed authentication: wrong key, or tampered, reordered, swapped or truncated
    /// data. Deliberately says no more than that.
    #[error("segment {stripe} failed to decrypt: wrong key or tampered data")]
    Decrypt { stripe: u64 },
    /// A data shard rebuilt from parity does not hash to its id: the stripe's shards, each
    /// matching its own id, do not belong to one code word (the uploader wrote parity that
    /// disagrees with its data).
    #[error("shard {index} of stripe {stripe}, rebuilt from parity, does not match its id")]
    InconsistentParity { stripe: u64, index: usize },
    /// `finish` was called before every stripe was coded or decoded.
    #[error("stopped at stripe {next} of {stripes}")]
    Incomplete { next: u64, stripes: u64 },
    /// A segment coded out of order: stripes are coded in file order, each once.
    #[error("stripe {actual} coded out of order: expected stripe {expected}")]
    OutOfOrder { expected: u64, actual: u64 },
    /// Reading the input failed.
    #[error("cannot read the input: {0}")]
    Read(std::io::Error),
    /// Input pushed after the last segment was taken.
    #[error("the encoder has already taken its last segment")]
    Finished,
    /// A stripe recorded with the wrong number of shard ids.
    #[error("stripe {stripe} has {ids} shard ids, expected {expected}")]
    ShardCount { stripe: u64, ids: usize, expected: usize },
    /// The platform's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(getrandom::Error),
    /// The erasure coder refused its input (a bug: inputs are validated before).
    #[error("erasure coding failed: {0}")]
    Erasure(#[from] reed_solomon_simd::Error),
}

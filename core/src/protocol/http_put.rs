//! Shards put over HTTP: `POST /api/shards` ([`SHARD_PUT_HTTP_PATH`]) with a put request of
//! `/shardweb/shard/1` as the body, answered with its put reply (or a refusal) as the body.
//!
//! A relay charges what it stores to the sender's quota, so the sender proves who it is: it
//! signs, with the Ed25519 key of its libp2p identity, the relay it writes to, the time, and the
//! ids of the shards in the body (each shard is checked against its id on arrival, so the ids
//! stand for the bytes). The relay charges the peer id of that key, as it would over libp2p.
//!
//! ```text
//! x-shardweb-key        the sender's Ed25519 public key: 64 lowercase hex digits
//! x-shardweb-time       when it signed: seconds since the Unix epoch, decimal
//! x-shardweb-signature  64 bytes of Ed25519 signature, 128 lowercase hex digits, over
//!     "shardweb/http-put/1" ‖ relay peer id length u8 ‖ relay peer id bytes ‖ time u64
//!     ‖ count u16 ‖ count × shard id [32]
//! ```
//!
//! A signature is good for [`MAX_CLOCK_SKEW_SECS`] either side of the relay's clock and for
//! that relay only. Replaying one within that time stores the same shards for the same sender
//! again, which changes nothing: shards are named by their hash and charged once.
//!
//! The reply is vouched for in turn: the relay signs it with its own libp2p identity key,
//! bound to the request by the request's signature, so that only the relay the sender meant
//! can tell it that its shards are stored (not whatever answers at a URL):
//!
//! ```text
//! x-shardweb-receipt    128 lowercase hex digits: the relay's Ed25519 signature over
//!     "shardweb/http-put-receipt/1" ‖ the request's signature [64] ‖ the reply's bytes
//! ```
//!
//! The sender checks it against the key inside the relay's peer id, which libp2p derives
//! from the key itself for Ed25519 identities.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p::PeerId;

use crate::codec::ShardId;

/// Where a relay takes shard puts over HTTP.
pub const SHARD_PUT_HTTP_PATH: &str = "/api/shards";
/// The header naming the sender's public key.
pub const KEY_HEADER: &str = "x-shardweb-key";
/// The header with the time of signing.
pub const TIME_HEADER: &str = "x-shardweb-time";
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "x-shardweb-signature";
/// The reply's header with the relay's signature of the reply.
pub const RECEIPT_HEADER: &str = "x-shardweb-receipt";
/// How far the time signed may be from the relay's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

const DOMAIN: &[u8] = b"shardweb/http-put/1";
const RECEIPT_DOMAIN: &[u8] = b"shardweb/http-put-receipt/1";

/// Why a signed put was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A header is absent.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// A header is not what it should be.
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    /// The time signed is too far from the relay's clock.
    #[error("signed at {signed}, {skew} s from this relay's clock (at most {MAX_CLOCK_SKEW_SECS})")]
    Stale {
        /// The time signed.
        signed: u64,
        /// How far it is from the relay's clock, in seconds.
        skew: u64,
    },
    /// The signature is not the key's over this request to this relay.
    #[error("the signature does not match the request")]
    BadSignature,
    /// A reply's receipt is missing, malformed, or not the relay's over this reply.
    #[error("the reply is not signed by the relay it was sent to")]
    BadReceipt,
}

/// A put's signature and what it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutAuth {
    key: [u8; 32],
    time: u64,
    signature: [u8; 64],
}

impl PutAuth {
    /// Signs a put of the shards `ids` to `relay` at `time` (seconds since the Unix epoch).
    pub fn sign(key: &SigningKey, relay: &PeerId, time: u64, ids: &[ShardId]) -> Self {
        let signature = key.sign(&message(relay, time, ids)).to_bytes();
        Self { key: key.verifying_key().to_bytes(), time, signature }
    }

    /// The three headers to send, as (name, value).
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (KEY_HEADER, data_encoding::HEXLOWER.encode(&self.key)),
            (TIME_HEADER, self.time.to_string()),
            (SIGNATURE_HEADER, data_encoding::HEXLOWER.encode(&self.signature)),
        ]
    }

    /// Reads the headers of a request, looked up by name with `header`.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let get = |name: &'static str| header(name).ok_or(AuthError::Missing(name));
        Ok(Self {
            key: hex_array(get(KEY_HEADER)?).ok_or(AuthError::Malformed(KEY_HEADER))?,
            time: decimal(get(TIME_HEADER)?).ok_or(AuthError::Malformed(TIME_HEADER))?,
            signature: hex_array(get(SIGNATURE_HEADER)?)
                .ok_or(AuthError::Malformed(SIGNATURE_HEADER))?,
        })
    }

    /// Whether the time signed is within [`MAX_CLOCK_SKEW_SECS`] of `now`; cheap, so checked
    /// before the body is read.
    pub fn check_time(&self, now: u64) -> Result<(), AuthError> {
        let skew = self.time.abs_diff(now);
        if skew > MAX_CLOCK_SKEW_SECS {
            return Err(AuthError::Stale { signed: self.time, skew });
        }
        Ok(())
    }

    /// Checks the signature over a put of `ids` to `relay`, and returns the sender's peer id.
    pub fn verify(&self, relay: &PeerId, ids: &[ShardId]) -> Result<PeerId, AuthError> {
        let key = VerifyingKey::from_bytes(&self.key).map_err(|_| AuthError::BadSignature)?;
        key.verify_strict(&message(relay, self.time, ids), &Signature::from_bytes(&self.signature))
            .map_err(|_| AuthError::BadSignature)?;
        let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(&self.key)
            .map_err(|_| AuthError::Malformed(KEY_HEADER))?;
        Ok(libp2p::identity::PublicKey::from(public).to_peer_id())
    }
}

impl PutAuth {
    /// The bytes a relay signs, with its identity key, to vouch for `reply` to this put.
    pub fn receipt_message(&self, reply: &[u8]) -> Vec<u8> {
        [RECEIPT_DOMAIN, &self.signature, reply].concat()
    }

    /// The receipt header's value for a signature over [`PutAuth::receipt_message`].
    pub fn receipt_header(signature: &[u8]) -> String {
        data_encoding::HEXLOWER.encode(signature)
    }

    /// Checks that `receipt` (the header's value) is `relay`'s signature of `reply` to this
    /// put. Fails for a relay whose peer id does not hold its key (only Ed25519 ones do).
    pub fn check_receipt(
        &self,
        relay: &PeerId,
        reply: &[u8],
        receipt: Option<&str>,
    ) -> Result<(), AuthError> {
        let signature: [u8; 64] = receipt.and_then(hex_array).ok_or(AuthError::BadReceipt)?;
        let key = public_key_of(relay).ok_or(AuthError::BadReceipt)?;
        match key.verify(&self.receipt_message(reply), &signature) {
            true => Ok(()),
            false => Err(AuthError::BadReceipt),
        }
    }
}

/// The public key a peer id holds: Ed25519 (and other short) keys are inlined in the peer
/// id as an identity multihash; `None` for peer ids that only hash their key.
pub fn public_key_of(peer: &PeerId) -> Option<libp2p::identity::PublicKey> {
    let hash = peer.as_ref();
    if hash.code() != 0 {
        return None;
    }
    libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()
}

/// The bytes signed for a put of `ids` to `relay` at `time`.
fn message(relay: &PeerId, time: u64, ids: &[ShardId]) -> Vec<u8> {
    let relay = relay.to_bytes();
    let mut m = Vec::with_capacity(DOMAIN.len() + 1 + relay.len() + 10 + 32 * ids.len());
    m.extend_from_slice(DOMAIN);
    // A peer id is a multihash of at most 64 bytes of digest: its length fits a byte.
    m.push(relay.len() as u8);
    m.extend_from_slice(&relay);
    m.extend_from_slice(&time.to_be_bytes());
    // A put carries at most MAX_BATCH (1024) shards; a longer list cannot verify.
    m.extend_from_slice(&(ids.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    ids.iter().for_each(|id| m.extend_from_slice(id.as_bytes()));
    m
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    data_encoding::HEXLOWER.decode(text.as_bytes()).ok()?.try_into().ok()
}

fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn fixture() -> (SigningKey, PeerId, Vec<ShardId>) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let relay_key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
        let ids = vec![ShardId::of(b"a"), ShardId::of(b"b")];
        (key, relay_key.public().to_peer_id(), ids)
    }

    fn parse(headers: &[(&'static str, String)]) -> Result<PutAuth, AuthError> {
        let map: HashMap<&str, &str> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        PutAuth::from_headers(|name| map.get(name).copied())
    }

    /// The signed bytes and the headers are a wire format: pinned. The signature was checked
    /// against an independent Ed25519 implementation (Python's `cryptography`).
    #[test]
    fn golden_vector() {
        let (key, relay, ids) = fixture();
        let m = message(&relay, 1_790_000_000, &ids);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&m[..DOMAIN.len() + 1 + 38 + 10]),
            "73686172647765622f687474702d7075742f3126\
             002408011220fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618\
             000000006ab13b800002"
        );
        // BLAKE3("a"), then BLAKE3("b").
        assert_eq!(
            data_encoding::HEXLOWER.encode(&m[m.len() - 64..m.len() - 32]),
            "17762fddd969a453925d65717ac3eea21320b66b54342fde15128d6caf21215f"
        );
        assert_eq!(&m[m.len() - 32..], ids[1].as_bytes());
        let auth = PutAuth::sign(&key, &relay, 1_790_000_000, &ids);
        let headers = auth.headers();
        assert_eq!(
            headers[0].1,
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        assert_eq!(headers[1].1, "1790000000");
        assert_eq!(
            headers[2].1,
            "cb60b4b113fd0b4fbfdbbc6769d1f1f40b69567ffa4420e7f5f40ed34a0bda26\
             4b4366bd93a9d5fc0df0fd4595265725babcb7cb08205efdeafad3cd3da6bb07"
        );
    }

    /// A relay's receipt of a reply, pinned (checked against Python's `cryptography` too), and
    /// good only for that relay's key, that request and those bytes.
    #[test]
    fn receipts_vouch_for_one_reply_from_one_relay() {
        let (key, relay, ids) = fixture();
        let relay_key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
        let auth = PutAuth::sign(&key, &relay, 1_790_000_000, &ids);
        let reply = [0x81, 0, 2, 0, 1];
        let message = auth.receipt_message(&reply);
        assert_eq!(&message[..27], b"shardweb/http-put-receipt/1");
        assert_eq!(&message[27..91], &auth.signature);
        assert_eq!(&message[91..], &reply);
        let receipt = PutAuth::receipt_header(&relay_key.sign(&message).unwrap());
        assert_eq!(
            receipt,
            "aec6788bb43b4d111493bbe91cc324df651fcc451d707bf30cd260ed19a021a1\
             0b8926cdbea39001da1a18525e88fae1553fb3bb98d1291d82c9d68bed85880a"
        );
        assert_eq!(auth.check_receipt(&relay, &reply, Some(&receipt)), Ok(()));
        let bad = Err(AuthError::BadReceipt);
        assert_eq!(auth.check_receipt(&relay, &[0x81, 0, 2, 0, 0], Some(&receipt)), bad);
        assert_eq!(auth.check_receipt(&relay, &reply, None), bad);
        assert_eq!(auth.check_receipt(&relay, &reply, Some(&receipt[2..])), bad);
        let other = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(auth.check_receipt(&other, &reply, Some(&receipt)), bad);
        let later = PutAuth::sign(&key, &relay, 1_790_000_001, &ids);
        assert_eq!(later.check_receipt(&relay, &reply, Some(&receipt)), bad);
        // A peer id that only hashes its key (as RSA ones do) cannot be checked.
        let sha256 = libp2p::multihash::Multihash::wrap(0x12, &[1; 32]).unwrap();
        let hashed = PeerId::from_multihash(sha256).unwrap();
        assert_eq!(auth.check_receipt(&hashed, &reply, Some(&receipt)), bad);
    }

    #[test]
    fn a_signed_put_names_its_sender_and_nothing_else_passes() {
        let (key, relay, ids) = fixture();
        let auth = parse(&PutAuth::sign(&key, &relay, 1000, &ids).headers()).unwrap();
        let sender = libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).unwrap();
        assert_eq!(auth.verify(&relay, &ids), Ok(sender.public().to_peer_id()));
        assert_eq!(auth.check_time(1000 + MAX_CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(auth.check_time(1000 - MAX_CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(
            auth.check_time(1001 + MAX_CLOCK_SKEW_SECS),
            Err(AuthError::Stale { signed: 1000, skew: MAX_CLOCK_SKEW_SECS + 1 })
        );
        // Another relay, other shards, another order, another time: not vouched for.
        let other = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(auth.verify(&other, &ids), Err(AuthError::BadSignature));
        assert_eq!(auth.verify(&relay, &ids[..1]), Err(AuthError::BadSignature));
        assert_eq!(auth.verify(&relay, &[ids[1], ids[0]]), Err(AuthError::BadSignature));
        let later = PutAuth { time: 1001, ..auth.clone() };
        assert_eq!(later.verify(&relay, &ids), Err(AuthError::BadSignature));
    }

    #[test]
    fn malformed_headers_are_named() {
        let (key, relay, ids) = fixture();
        let good = PutAuth::sign(&key, &relay, 1000, &ids).headers();
        let long_time = "1".repeat(21);
        for (i, name) in [KEY_HEADER, TIME_HEADER, SIGNATURE_HEADER].into_iter().enumerate() {
            let mut missing = good.to_vec();
            missing.remove(i);
            assert_eq!(parse(&missing), Err(AuthError::Missing(name)));
            let bad: Vec<String> = match i {
                1 => ["", "x", "+1000", "-1", "1e3", " 1000", &long_time].map(String::from).into(),
                _ => vec![
                    String::new(),
                    "zz".repeat(good[i].1.len() / 2),
                    good[i].1.to_uppercase(),
                    good[i].1[2..].to_owned(),
                    format!("{}00", good[i].1),
                ],
            };
            for bad in bad {
                let mut wrong = good.to_vec();
                wrong[i].1 = bad.clone();
                assert_eq!(parse(&wrong), Err(AuthError::Malformed(name)), "{name}: {bad:?}");
            }
        }
    }
}

//! Wire messages: golden vectors for every kind, round trips, and hostile frames. Run natively
//! and in headless Chromium.

#[cfg(wasm_browser)]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(wasm_browser)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use bytes::Bytes;
use shardweb_core::ManifestId;
use shardweb_core::codec::ShardId;
use shardweb_core::protocol::{
    Error, ErrorCode, MAX_BATCH, MAX_FRAME_BYTES, MAX_SHARD_BYTES, ManifestOutcome,
    ManifestRequest, ManifestResponse, PutOutcome, Refusal, ShardRequest, ShardResponse,
    ShardStatus,
};

fn id(b: u8) -> ShardId {
    ShardId([b; 32])
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn shard_requests() -> Vec<(ShardRequest, String)> {
    let ids = format!("{}{}", "aa".repeat(32), "bb".repeat(32));
    vec![
        (
            ShardRequest::Put(vec![
                (id(0xaa), Bytes::from_static(b"xy")),
                (id(0xbb), Bytes::new()),
            ]),
            format!("010002{}000000027879{}00000000", "aa".repeat(32), "bb".repeat(32)),
        ),
        (ShardRequest::Get(vec![id(0xaa), id(0xbb)]), format!("020002{ids}")),
        (ShardRequest::Has(vec![id(0xaa), id(0xbb)]), format!("030002{ids}")),
        (ShardRequest::Get(vec![]), "020000".into()),
    ]
}

fn shard_responses() -> Vec<(ShardResponse, String)> {
    use PutOutcome::*;
    vec![
        (
            ShardResponse::Put(vec![Stored, AlreadyHeld, NoSpace, Mismatch, Failed]),
            "8100050001020304".into(),
        ),
        (
            ShardResponse::Get(vec![
                ShardStatus::Found(Bytes::from_static(b"abc")),
                ShardStatus::Missing,
                ShardStatus::Deferred,
            ]),
            "820003010000000361626300".to_owned() + "02",
        ),
        (ShardResponse::Has((0..10).map(|i| i % 3 == 0).collect()), "83000a4902".into()),
        (
            ShardResponse::Refused(Refusal {
                code: ErrorCode::RateLimited,
                message: "slow".into(),
            }),
            "ff03000473 6c6f77".replace(' ', ""),
        ),
    ]
}

/// Messages with their golden hex.
type Golden<T> = Vec<(T, String)>;

fn manifest_messages() -> (Golden<ManifestRequest>, Golden<ManifestResponse>) {
    let requests = vec![
        (ManifestRequest::Put(Bytes::from_static(b"SWMF")), "010000000453574d46".into()),
        (ManifestRequest::Get(ManifestId([0x11; 32])), format!("02{}", "11".repeat(32))),
    ];
    let responses = vec![
        (ManifestResponse::Put(ManifestOutcome::Stored), "8100".into()),
        (ManifestResponse::Put(ManifestOutcome::Invalid), "8103".into()),
        (ManifestResponse::Get(None), "8200".into()),
        (ManifestResponse::Get(Some(Bytes::from_static(b"m"))), "8201000000016d".into()),
        (
            ManifestResponse::Refused(Refusal {
                code: ErrorCode::Internal,
                message: String::new(),
            }),
            "ff050000".into(),
        ),
    ];
    (requests, responses)
}

#[test]
fn golden_vectors_round_trip() {
    for (message, golden) in shard_requests() {
        assert_eq!(hex(&message.encode()), golden, "{message:?}");
        assert_eq!(ShardRequest::decode(message.encode().into()).unwrap(), message);
    }
    for (message, golden) in shard_responses() {
        assert_eq!(hex(&message.encode()), golden, "{message:?}");
        assert_eq!(ShardResponse::decode(message.encode().into()).unwrap(), message);
    }
    let (requests, responses) = manifest_messages();
    for (message, golden) in requests {
        assert_eq!(hex(&message.encode()), golden, "{message:?}");
        assert_eq!(ManifestRequest::decode(message.encode().into()).unwrap(), message);
    }
    for (message, golden) in responses {
        assert_eq!(hex(&message.encode()), golden, "{message:?}");
        assert_eq!(ManifestResponse::decode(message.encode().into()).unwrap(), message);
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let mut frames: Vec<(Vec<u8>, u8)> = Vec::new();
    frames.extend(shard_requests().into_iter().map(|(m, _)| (m.encode(), 0)));
    frames.extend(shard_responses().into_iter().map(|(m, _)| (m.encode(), 1)));
    let (requests, responses) = manifest_messages();
    frames.extend(requests.into_iter().map(|(m, _)| (m.encode(), 2)));
    frames.extend(responses.into_iter().map(|(m, _)| (m.encode(), 3)));
    let decode = |bytes: Vec<u8>, which: u8| -> Result<(), Error> {
        let frame = Bytes::from(bytes);
        match which {
            0 => ShardRequest::decode(frame).map(drop),
            1 => ShardResponse::decode(frame).map(drop),
            2 => ManifestRequest::decode(frame).map(drop),
            _ => ManifestResponse::decode(frame).map(drop),
        }
    };
    for (frame, which) in frames {
        for len in 0..frame.len() {
            assert!(decode(frame[..len].to_vec(), which).is_err(), "{frame:02x?} cut to {len}");
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert_eq!(decode(longer, which), Err(Error::TrailingBytes { extra: 1 }));
    }
}

#[test]
fn hostile_frames_get_typed_errors() {
    let big = Bytes::from(vec![0u8; MAX_FRAME_BYTES + 1]);
    assert!(matches!(ShardRequest::decode(big.clone()), Err(Error::TooLarge { .. })));
    assert!(matches!(ManifestResponse::decode(big), Err(Error::TooLarge { .. })));
    assert_eq!(
        ShardRequest::decode(Bytes::from_static(&[0x09, 0, 0])),
        Err(Error::UnknownKind { kind: 9 })
    );
    let over = (MAX_BATCH as u16 + 1).to_be_bytes();
    assert_eq!(
        ShardRequest::decode(Bytes::from(vec![0x02, over[0], over[1]])),
        Err(Error::BatchTooLarge { count: MAX_BATCH + 1, max: MAX_BATCH })
    );
    // A put whose shard length claims more than the limit is refused before any copy.
    let mut put = vec![0x01, 0, 1];
    put.extend_from_slice(&[0; 32]);
    put.extend_from_slice(&(MAX_SHARD_BYTES as u32 + 1).to_be_bytes());
    assert!(matches!(ShardRequest::decode(put.into()), Err(Error::ShardTooLarge { .. })));
    // A count that promises more entries than the frame holds.
    assert_eq!(
        ShardRequest::decode(Bytes::from_static(&[0x03, 0, 2, 1])),
        Err(Error::Truncated { field: "shard id" })
    );
    assert!(matches!(
        ShardResponse::decode(Bytes::from_static(&[0x81, 0, 1, 9])),
        Err(Error::InvalidValue { field: "put outcome", value: 9 })
    ));
    assert!(matches!(
        ShardResponse::decode(Bytes::from_static(&[0xff, 0, 0, 0])),
        Err(Error::InvalidValue { field: "error code", .. })
    ));
}

#[test]
fn put_shards_share_the_frame() {
    let request = ShardRequest::Put(vec![(id(1), Bytes::from(vec![7u8; 1000]))]);
    let frame = Bytes::from(request.encode());
    let ShardRequest::Put(shards) = ShardRequest::decode(frame.clone()).unwrap() else { panic!() };
    let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    assert!(frame_range.contains(&(shards[0].1.as_ptr() as usize)), "shard was copied");
}

#[test]
fn long_refusal_messages_are_cut_on_a_character_boundary() {
    let message = "é".repeat(200);
    let frame = ShardResponse::Refused(Refusal { code: ErrorCode::Malformed, message }).encode();
    let ShardResponse::Refused(r) = ShardResponse::decode(frame.into()).unwrap() else { panic!() };
    assert_eq!(r.message, "é".repeat(128));
}

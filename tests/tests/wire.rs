//! Raw frames on the wire: a libp2p client with no validation of its own sends malformed and
//! oversized frames and asks for corrupt shards; the relay refuses with typed errors, never
//! serves a corrupt shard, and keeps serving.

use std::time::Duration;

use bytes::Bytes;
use libp2p::{Multiaddr, PeerId};
use shardweb_core::ShardId;
use shardweb_core::protocol::{ErrorCode, ShardRequest, ShardResponse, ShardStatus};
use shardweb_tests::{Relay, get, put, random_file};

use raw::RawCodec;

mod raw;

async fn exchange(relay: &Relay, frames: Vec<Vec<u8>>) -> Vec<Result<ShardResponse, String>> {
    let addr: Multiaddr = relay.addr("tcp").parse().unwrap();
    let peer: PeerId = relay.info().unwrap()["peer_id"].as_str().unwrap().parse().unwrap();
    let mut swarm = raw::asker(RawCodec::default(), Duration::from_secs(60));
    swarm.dial(addr).unwrap();
    let mut replies = Vec::new();
    for frame in frames {
        swarm.behaviour_mut().send_request(&peer, frame);
        let reply = raw::next_reply(&mut swarm).await.and_then(|response| {
            ShardResponse::decode(Bytes::from(response)).map_err(|e| e.to_string())
        });
        replies.push(reply);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_refused_and_the_relay_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("a"), &[]);
    let unknown_kind = vec![0x09, 0, 0];
    let truncated = vec![0x03, 0, 2, 1, 2, 3];
    let oversized = vec![0u8; (32 << 20) + 1];
    let mut shard_too_large = vec![0x01, 0, 1];
    shard_too_large.extend_from_slice(&[0; 32]);
    shard_too_large.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    let good = ShardRequest::Has(vec![ShardId([7; 32])]).encode();
    let replies = tokio::time::timeout(
        Duration::from_secs(90),
        exchange(&relay, vec![unknown_kind, truncated, oversized, shard_too_large, good]),
    )
    .await
    .expect("the relay answered in time");
    let code = |r: &Result<ShardResponse, String>| match r {
        Ok(ShardResponse::Refused(refusal)) => Some(refusal.code),
        _ => None,
    };
    assert_eq!(code(&replies[0]), Some(ErrorCode::Malformed), "{:?}", replies[0]);
    assert_eq!(code(&replies[1]), Some(ErrorCode::Malformed), "{:?}", replies[1]);
    assert_eq!(code(&replies[2]), Some(ErrorCode::TooLarge), "{:?}", replies[2]);
    assert_eq!(code(&replies[3]), Some(ErrorCode::Malformed), "{:?}", replies[3]);
    assert_eq!(replies[4], Ok(ShardResponse::Has(vec![false])));
    assert!(
        relay.metric("shardweb_requests_total{protocol=\"shard\",outcome=\"refused\"}").unwrap()
            >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shard_on_disk_is_never_served_and_the_file_still_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("a"), &[]);
    let file = random_file(dir.path(), "in.bin", 1_500_000, 6);
    let link = put(dir.path(), &file, &[&relay], &["--k", "2", "--m", "1"]);
    // Corrupt one shard file (its name is its id); it may be a data or a parity shard.
    let shards = relay.data.join("store/shards");
    let sub = std::fs::read_dir(&shards).unwrap().next().unwrap().unwrap().path();
    let path = std::fs::read_dir(sub).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let id = ShardId(
        blake3::Hash::from_hex(path.file_name().unwrap().to_str().unwrap()).unwrap().into(),
    );

    // The file comes back identical whichever shard was hit: a data shard is rebuilt from
    // parity, a parity shard is not needed.
    assert_eq!(
        get(dir.path(), &link, &[&relay], "out.bin").unwrap(),
        std::fs::read(&file).unwrap()
    );
    // Asked for directly, the corrupt shard is not served, and is gone and counted.
    let request = ShardRequest::Get(vec![id]).encode();
    let replies = tokio::time::timeout(Duration::from_secs(60), exchange(&relay, vec![request]))
        .await
        .expect("the relay answered in time");
    assert_eq!(replies[0], Ok(ShardResponse::Get(vec![ShardStatus::Missing])));
    assert!(!path.exists());
    assert_eq!(relay.metric("shardweb_corrupt_shards_removed_total"), Some(1));
}

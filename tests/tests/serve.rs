//! A peer that serves (what the browser node runs, here over loopback TCP): the host's answer
//! reaches the asker, and the host learns when its answer has left, or could not, so that it
//! can bound the memory of the answers it holds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, SwarmBuilder, identity::Keypair, noise, tcp};
use shardweb_core::ShardId;
use shardweb_core::node::peer::{self, Inbound, Peer};
use shardweb_core::node::{Fetched, Network, mux};
use shardweb_core::protocol::{ShardRequest, ShardResponse, ShardStatus};
use tokio::sync::Semaphore;

use raw::RawCodec;

mod raw;

const WITHIN: Duration = Duration::from_secs(20);

/// A peer on loopback TCP, its driver running, with the requests it receives.
async fn start(serve: bool) -> (Peer, mpsc::Receiver<Inbound>, Multiaddr) {
    let config = peer::Config::new("shardweb-test/0", serve);
    let swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, mux::config)
        .unwrap()
        .with_relay_client(noise::Config::new, mux::config)
        .unwrap()
        .with_behaviour(|key, relay| peer::Behaviour::new(key, relay, &config))
        .unwrap()
        .build();
    let (peer, driver, incoming) = Peer::new(swarm);
    tokio::spawn(driver.run());
    let addr = peer.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).await.unwrap();
    (peer, incoming.requests, addr)
}

/// The next shard get the host receives, with where to answer it.
async fn next_get(
    requests: &mut mpsc::Receiver<Inbound>,
) -> (Vec<ShardId>, peer::Responder<ShardResponse>) {
    let next = tokio::time::timeout(WITHIN, requests.next()).await.expect("a request in time");
    match next {
        Some(Inbound::Shard { request: ShardRequest::Get(ids), reply, .. }) => (ids, reply),
        other => panic!("expected a shard get, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_is_sent_and_the_host_learns_it_left() {
    let (server, mut requests, addr) = start(true).await;
    let (client, _, _) = start(false).await;
    client.dial(server.id(), vec![addr]).await.unwrap();

    let shard = Bytes::from(vec![7u8; 3 << 20]);
    let id = ShardId::of(&shard);
    let asking = tokio::spawn({
        let (client, server) = (client.clone(), server.id());
        async move { client.get_shards(&server, vec![id]).await }
    });
    let (ids, reply) = next_get(&mut requests).await;
    assert_eq!(ids, [id]);
    // `send` returns once the driver has written the answer; it would hang forever if the
    // driver never told.
    let answer = ShardResponse::Get(vec![ShardStatus::Found(shard.clone())]);
    tokio::time::timeout(WITHIN, reply.send(answer)).await.expect("the answer to be written");
    let fetched = asking.await.unwrap().unwrap();
    assert!(matches!(&fetched[..], [Fetched::Verified(s)] if s.bytes() == &shard[..]));
    server.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn an_answer_to_a_peer_that_left_is_let_go() {
    let (server, mut requests, addr) = start(true).await;
    let (client, _, _) = start(false).await;
    client.dial(server.id(), vec![addr]).await.unwrap();

    let id = ShardId::of(b"gone");
    let asking = tokio::spawn({
        let (client, server) = (client.clone(), server.id());
        async move { client.get_shards(&server, vec![id]).await }
    });
    let (_, reply) = next_get(&mut requests).await;
    // The asker goes before the answer is ready: the answer cannot be written, and the host
    // is not kept waiting for it.
    client.stop().await;
    assert!(asking.await.unwrap().is_err());
    let answer = ShardResponse::Get(vec![ShardStatus::Found(Bytes::from_static(b"gone"))]);
    tokio::time::timeout(WITHIN, reply.send(answer)).await.expect("the host to be let go");
    server.stop().await;
}

#[tokio::test]
async fn the_host_learns_its_answer_left_only_once_the_asker_has_read_it() {
    let (server, mut requests, addr) = start(true).await;
    let gate = Arc::new(Semaphore::new(0));
    let mut asker = raw::asker(RawCodec { gate: Some(Arc::clone(&gate)) }, WITHIN);
    asker.dial(addr.with(Protocol::P2p(server.id()))).unwrap();
    // Larger than a stream's flow-control window: it cannot all be sent before it is read.
    let shard = Bytes::from(vec![9u8; 4 << 20]);
    let id = ShardId::of(&shard);
    asker.behaviour_mut().send_request(&server.id(), ShardRequest::Get(vec![id]).encode());
    let reply = tokio::spawn(async move { raw::next_reply(&mut asker).await });

    let (_, responder) = next_get(&mut requests).await;
    let answer = ShardResponse::Get(vec![ShardStatus::Found(shard.clone())]);
    let sent = tokio::spawn(responder.send(answer));
    // The asker has not read it: the answer is not out, and the host still holds it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sent.is_finished(), "the host was told its answer left before it was read");
    gate.add_permits(1);
    tokio::time::timeout(WITHIN, sent).await.expect("the answer to be written").unwrap();
    let reply = tokio::time::timeout(WITHIN, reply).await.unwrap().unwrap().unwrap();
    let statuses = match ShardResponse::decode(Bytes::from(reply)).unwrap() {
        ShardResponse::Get(statuses) => statuses,
        other => panic!("{other:?}"),
    };
    assert!(matches!(&statuses[..], [ShardStatus::Found(b)] if *b == shard));
    server.stop().await;
}

//! A libp2p peer that speaks the shard protocol in raw frames, with no validation of its
//! own: what the wire tests send to a relay, and the slow asker of the serving tests.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::sync::Semaphore;

/// Sends and receives raw frames. With a `gate`, each reply is read only once the gate gives
/// a permit: an asker that is slow to read.
#[derive(Clone, Default)]
pub struct RawCodec {
    pub gate: Option<Arc<Semaphore>>,
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.map_err(io::Error::other)?.forget();
        }
        let mut buf = Vec::new();
        io.take(64 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// A peer on TCP that asks `/shardweb/shard/1` in raw frames, each request failing after
/// `timeout`.
pub fn asker(codec: RawCodec, timeout: Duration) -> Swarm<request_response::Behaviour<RawCodec>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new("/shardweb/shard/1"), ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(timeout),
            )
        })
        .unwrap()
        .build()
}

/// Drives `swarm` until the reply to its request in flight: its raw bytes, or why none came.
pub async fn next_reply(
    swarm: &mut Swarm<request_response::Behaviour<RawCodec>>,
) -> Result<Vec<u8>, String> {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => return Ok(response),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                return Err(error.to_string());
            }
            _ => {}
        }
    }
}

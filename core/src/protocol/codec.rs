//! libp2p request-response codecs for `/shardweb/shard/1` and `/shardweb/manifest/1`.
//!
//! A frame is the whole stream in one direction, read with a hard limit. A request that does
//! not decode, or is over the limit, still reaches the node as an `Err`, so that it can answer
//! with a typed refusal instead of dropping the stream.

use std::io;
use std::marker::PhantomData;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::{
    Frame, MANIFEST_PROTOCOL, MAX_FRAME_BYTES, ManifestRequest, ManifestResponse, Message,
    SHARD_PROTOCOL, ShardRequest, ShardResponse,
};
use crate::protocol;

/// A request as received: decoded, or the reason it could not be.
pub type Incoming<T> = Result<T, protocol::Error>;

/// The shard protocol's name.
pub const SHARD: StreamProtocol = StreamProtocol::new(SHARD_PROTOCOL);
/// The manifest protocol's name.
pub const MANIFEST: StreamProtocol = StreamProtocol::new(MANIFEST_PROTOCOL);

/// The codec of `/shardweb/shard/1`.
pub type ShardCodec = FrameCodec<ShardRequest, ShardResponse>;
/// The codec of `/shardweb/manifest/1`.
pub type ManifestCodec = FrameCodec<ManifestRequest, ManifestResponse>;

/// One frame of `Req` each way, then one of `Resp`.
#[derive(Debug)]
pub struct FrameCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for FrameCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for FrameCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Reads one frame of at most [`MAX_FRAME_BYTES`]; `Err(TooLarge)` past that.
///
/// Reads go through one small buffer and are appended to the frame, which costs one copy;
/// `read_to_end` would zero every growth of a frame of megabytes first, then move it.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Incoming<Bytes>> {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut buf = Vec::new();
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Ok(buf.into()));
        }
        if buf.len() + n > MAX_FRAME_BYTES {
            let len = buf.len() + n;
            return Ok(Err(protocol::Error::TooLarge { len, max: MAX_FRAME_BYTES }));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The buffer [`read_frame`] reads through.
const READ_CHUNK: usize = 64 << 10;

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: Frame) -> io::Result<()> {
    for piece in frame.into_pieces() {
        io.write_all(&piece).await?;
    }
    io.close().await
}

fn invalid(e: protocol::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<Req, Resp> request_response::Codec for FrameCodec<Req, Resp>
where
    Req: Message + Send + 'static,
    Resp: Message + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Incoming<Req>;
    type Response = Resp;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        Ok(read_frame(io).await?.and_then(Req::decode))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        read_frame(io).await?.and_then(Resp::decode).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Self::Request,
    ) -> io::Result<()> {
        write_frame(io, request.map_err(invalid)?.frame()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Self::Response,
    ) -> io::Result<()> {
        write_frame(io, response.frame()).await
    }
}

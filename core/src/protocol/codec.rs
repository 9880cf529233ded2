//! libp2p request-response codecs for `/shardweb/shard/1` and `/shardweb/manifest/1`.
//!
//! A frame is the whole stream in one direction, read with a hard limit. A request that does
//! not decode, or is over the limit, still reaches the node as an `Err`, so that it can answer
//! with a typed refusal instead of dropping the stream.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// Reads land in the frame's own buffer, a piece of [`READ_CHUNK`] at a time (zeroed just
/// before it is read into, while it is in cache). The buffer starts at the size of the last
/// large frame read, so that a run of batches of shards does not move each frame as it grows;
/// a frame that turns out small gives the spare room back.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Incoming<Bytes>> {
    // One byte over the hint: a frame as large as the last ends without growing the buffer
    // for the read that finds the end of the stream.
    let hint = FRAME_HINT.load(Ordering::Relaxed).clamp(READ_CHUNK, MAX_FRAME_BYTES) + 1;
    let mut buf = Vec::with_capacity(hint);
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            buf.reserve((2 * len).min(MAX_FRAME_BYTES + 1) - len);
        }
        buf.resize(len + (buf.capacity() - len).min(READ_CHUNK), 0);
        let n = io.read(buf.get_mut(len..).unwrap_or_default()).await?;
        buf.truncate(len + n);
        if n == 0 {
            break;
        }
        if buf.len() > MAX_FRAME_BYTES {
            return Ok(Err(protocol::Error::TooLarge { len: buf.len(), max: MAX_FRAME_BYTES }));
        }
    }
    if buf.len() >= READ_CHUNK {
        FRAME_HINT.store(buf.len(), Ordering::Relaxed);
    }
    if buf.len() < buf.capacity() / 2 {
        buf.shrink_to_fit();
    }
    Ok(Ok(buf.into()))
}

/// The most a frame reads in one call.
const READ_CHUNK: usize = 64 << 10;

/// The size of the last frame of at least [`READ_CHUNK`] read in this process.
static FRAME_HINT: AtomicUsize = AtomicUsize::new(0);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn read(bytes: &[u8]) -> Incoming<Bytes> {
        futures::executor::block_on(read_frame(&mut futures::io::Cursor::new(bytes)))
            .expect("a cursor does not fail")
    }

    /// Frames of every size relative to the last one (the size the buffer starts at) arrive
    /// whole, and one byte over the limit is refused.
    #[test]
    fn frames_arrive_whole_whatever_came_before() {
        for len in [0, 1, READ_CHUNK, 3 << 20, 10, 3 << 20, (3 << 20) + 1, 5 << 20, 70_000] {
            let bytes = frame(len);
            assert_eq!(read(&bytes).expect("within the limit"), bytes, "{len} bytes");
        }
        let err = read(&frame(MAX_FRAME_BYTES + 1)).expect_err("over the limit");
        assert!(matches!(err, protocol::Error::TooLarge { max: MAX_FRAME_BYTES, .. }));
        assert_eq!(read(&frame(MAX_FRAME_BYTES)).expect("at the limit").len(), MAX_FRAME_BYTES);
    }
}

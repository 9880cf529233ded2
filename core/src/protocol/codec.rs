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
/// Reads land in the frame's own buffer, a piece of [`READ_CHUNK`] at a time. A large frame
/// (a batch of shards) reads into a buffer taken from [`FramePool`] and hands it back when the
/// last `Bytes` sliced from it is dropped: a run of batches reuses the same memory instead of
/// having each frame's pages faulted in and zeroed anew. A small frame is copied out and its
/// buffer returned at once; so is a frame much smaller than the buffer it landed in.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Incoming<Bytes>> {
    let mut buf = POOL.take();
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() > MAX_FRAME_BYTES {
                POOL.give(buf);
                return Ok(Err(protocol::Error::TooLarge { len: filled, max: MAX_FRAME_BYTES }));
            }
            // One byte over the limit, so that a frame of exactly the limit can be told from a
            // longer one; zeroed once, then reused as it is.
            let grown = (2 * filled).clamp(READ_CHUNK, MAX_FRAME_BYTES + 1);
            buf.resize(grown, 0);
        }
        let end = filled + (buf.len() - filled).min(READ_CHUNK);
        let n = io.read(buf.get_mut(filled..end).unwrap_or_default()).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    // A small frame, or one that would pin a buffer four times its size, is copied out.
    if filled < READ_CHUNK || filled < buf.len() / 4 {
        let small = Bytes::copy_from_slice(buf.get(..filled).unwrap_or_default());
        POOL.give(buf);
        return Ok(Ok(small));
    }
    Ok(Ok(Bytes::from_owner(Pooled { buf, len: filled })))
}

/// The most a frame reads in one call, and the smallest frame read into a pooled buffer.
const READ_CHUNK: usize = 64 << 10;

/// Frame buffers kept for the next frames: at most this many bytes of them (on a relay, a
/// batch of shards is a few MiB and a client keeps up to eight in flight).
const POOL_BYTES: usize = if cfg!(target_arch = "wasm32") { 16 << 20 } else { 64 << 20 };

static POOL: FramePool = FramePool { free: std::sync::Mutex::new(Vec::new()) };

/// Buffers of frames that have been dropped, each fully initialized (by earlier reads), so
/// that reading into them again needs no zeroing.
struct FramePool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl FramePool {
    /// The largest free buffer, or an empty one.
    fn take(&self) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        free.pop().unwrap_or_default()
    }

    /// Keeps `buf` if it is worth keeping and the pool has room; frees it otherwise.
    fn give(&self, buf: Vec<u8>) {
        if buf.len() < READ_CHUNK {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let kept: usize = free.iter().map(Vec::len).sum();
        if kept + buf.len() <= POOL_BYTES {
            // Largest last, so that `take` finds it first.
            let at = free.partition_point(|b| b.len() <= buf.len());
            free.insert(at, buf);
        }
    }
}

/// The owner of a pooled frame's bytes: returns its buffer to the pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        POOL.give(std::mem::take(&mut self.buf));
    }
}

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

    /// A frame's bytes stay its own while it is held, whatever is read after it into reused
    /// buffers, and the pool keeps no more than its bound.
    #[test]
    fn pooled_frames_do_not_share_bytes_and_the_pool_is_bounded() {
        // Twice what the pool may keep, so that dropping them all must turn some away.
        let held: Vec<(Vec<u8>, Bytes)> = (0..8)
            .map(|i| {
                let mut bytes = frame(POOL_BYTES / 4 + i * 4097);
                bytes.iter_mut().for_each(|b| *b ^= i as u8);
                let got = read(&bytes).expect("within the limit");
                (bytes, got)
            })
            .collect();
        for (i, (sent, got)) in held.iter().enumerate() {
            assert_eq!(got, sent, "frame {i}");
        }
        drop(held);
        let kept: usize = POOL.free.lock().expect("not poisoned").iter().map(Vec::len).sum();
        assert!(kept <= POOL_BYTES, "{kept} bytes pooled");
        assert_eq!(read(&frame(200_000)).expect("within the limit"), frame(200_000));
    }
}

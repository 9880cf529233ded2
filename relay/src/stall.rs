//! HTTP connections whose peer stops reading are closed. A reply waiting to be written holds
//! its bytes (up to a frame of shards) and its read permit; without a limit, a client that
//! asks and never reads would keep them, and keep a graceful shutdown waiting, for good.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection that fails with [`io::ErrorKind::TimedOut`] when a write or flush has been
/// pending for its limit. Any progress restarts the clock; reads pass through untouched.
#[derive(Debug)]
pub struct Guarded<S> {
    io: S,
    limit: Duration,
    /// When the pending write times out; armed while writes wait.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> Guarded<S> {
    /// Guards `io` with `limit`.
    pub fn new(io: S, limit: Duration) -> Self {
        Self { io, limit, deadline: Box::pin(tokio::time::sleep(limit)), armed: false }
    }

    /// What a write that returned `poll` means: progress disarms the clock, waiting arms it
    /// (and is woken when it runs out), and waiting past the limit is an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.deadline.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took no bytes within the request timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that reads nothing makes writes fail after the limit; one that reads keeps the
    /// connection, however long the whole takes.
    #[tokio::test]
    async fn writes_fail_only_when_the_peer_stops_taking_bytes() {
        let limit = Duration::from_millis(300);
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = Guarded::new(near, limit);
        let chunk = vec![7u8; 4096];

        // Read slowly, but within the limit each time: every write gets through.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 1024];
            while got < 16 * 4096 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                got += far.read(&mut buf).await.unwrap();
            }
            far
        });
        for _ in 0..16 {
            guarded.write_all(&chunk).await.unwrap();
        }
        let far = reader.await.unwrap();

        // Stop reading: the write fails within about the limit, as timed out.
        let started = std::time::Instant::now();
        let error = guarded.write_all(&chunk).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
        drop(far);
    }
}

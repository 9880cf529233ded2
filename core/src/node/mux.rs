//! The stream multiplexer of every shardweb connection: yamux (`/yamux/1.0.0`, the same wire
//! protocol every libp2p peer speaks), sending data frames of up to [`FRAME`] bytes.
//!
//! libp2p's own yamux upgrade sends at most 16 KiB per frame and exposes no way to change it.
//! A shard batch is megabytes, so on a fast link that is tens of thousands of frames a second,
//! each with its header, its write into the secure channel and, on the receiving side, its own
//! allocation. Larger frames cut that per-frame work; they are still bounded by the stream's
//! flow-control window, and every yamux implementation accepts them (the receiver's window,
//! not a frame size, is the protocol's limit; rust-yamux reads bodies of up to 1 MiB).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future::{self, Ready};
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The most one data frame carries.
pub const FRAME: usize = 256 << 10;

/// Inbound streams kept while nobody is asking for them; past this, new ones are reset. The
/// same as yamux's backlog of unacknowledged streams, which a yamux peer does not exceed.
const MAX_WAITING_STREAMS: usize = 256;

/// The connection upgrade that sets up yamux with shardweb's settings.
#[derive(Debug, Clone)]
pub struct Config(yamux::Config);

impl Default for Config {
    fn default() -> Self {
        let mut config = yamux::Config::default();
        config.set_split_send_size(FRAME);
        Self(config)
    }
}

/// The multiplexer upgrade for `SwarmBuilder` (it takes a function returning the upgrade).
pub fn config() -> Config {
    Config::default()
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(io, self.0, yamux::Mode::Server))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(io, self.0, yamux::Mode::Client))))
    }
}

/// One yamux connection as libp2p's [`StreamMuxer`].
///
/// yamux makes progress only when asked for its next inbound stream, so [`StreamMuxer::poll`]
/// (which libp2p calls to drive existing streams) does that too, and keeps any stream it gets
/// for the next [`StreamMuxer::poll_inbound`].
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    waiting: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C> {
    fn new(connection: yamux::Connection<C>) -> Self {
        Self { connection, waiting: VecDeque::new(), inbound_waker: None }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(stream) = this.waiting.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        match this.connection.poll_next_inbound(cx) {
            Poll::Ready(next) => Poll::Ready(next.unwrap_or(Err(yamux::ConnectionError::Closed))),
            Poll::Pending => {
                this.inbound_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut().connection.poll_new_outbound(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = match this.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => stream,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Err(yamux::ConnectionError::Closed)),
            Poll::Pending => return Poll::Pending,
        };
        if this.waiting.len() < MAX_WAITING_STREAMS {
            this.waiting.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        } else {
            tracing::warn!(%stream, "too many inbound streams waiting; resetting one");
        }
        // More may be ready: poll again soon, after other work has had its turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::future::Future;
    use std::rc::Rc;

    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::core::muxing::StreamMuxerExt;

    /// Both ends of a yamux connection over an in-memory pipe, and the sizes of the client's
    /// writes to it.
    fn pair() -> (Muxer<Pipe>, Muxer<Pipe>, Writes) {
        let (a, b) = Pipe::pair();
        let writes = a.writes.clone();
        let client = Muxer::new(yamux::Connection::new(a, config().0, yamux::Mode::Client));
        let server = Muxer::new(yamux::Connection::new(b, config().0, yamux::Mode::Server));
        (client, server, writes)
    }

    type Writes = std::sync::Arc<std::sync::Mutex<Vec<usize>>>;

    /// Drives a muxer (its inbound streams wait for `poll_inbound`) until the connection ends.
    fn drive(muxer: Rc<RefCell<Muxer<Pipe>>>) -> impl Future<Output = ()> {
        future::poll_fn(move |cx| match muxer.borrow_mut().poll_unpin(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        })
    }

    /// A stream of several frames' worth arrives whole on the other side, and the frames it
    /// went in were larger than libp2p's 16 KiB.
    #[test]
    fn large_writes_arrive_whole_in_large_frames() {
        let (client, server, writes) = pair();
        let (client, server) = (Rc::new(RefCell::new(client)), Rc::new(RefCell::new(server)));
        let mut pool = LocalPool::new();
        pool.spawner().spawn_local(drive(client.clone())).unwrap();
        pool.spawner().spawn_local(drive(server.clone())).unwrap();
        let sent: Vec<u8> = (0..3 * FRAME + 12_345).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let received = pool.run_until(async {
            let mut outbound =
                future::poll_fn(|cx| client.borrow_mut().poll_outbound_unpin(cx)).await.unwrap();
            let writer = async move {
                outbound.write_all(&sent).await.unwrap();
                outbound.close().await.unwrap();
            };
            let reader = async {
                let mut inbound =
                    future::poll_fn(|cx| server.borrow_mut().poll_inbound_unpin(cx)).await.unwrap();
                let mut got = Vec::new();
                inbound.read_to_end(&mut got).await.unwrap();
                got
            };
            future::join(writer, reader).await.1
        });
        assert!(received == expected, "{} bytes received of {}", received.len(), expected.len());
        let largest = writes.lock().unwrap().iter().copied().max().unwrap_or(0);
        assert!(largest > 64 << 10, "largest write to the connection: {largest} bytes");
    }

    /// One end of an in-memory duplex pipe that records the size of each write.
    struct Pipe {
        tx: futures::channel::mpsc::UnboundedSender<Vec<u8>>,
        rx: futures::channel::mpsc::UnboundedReceiver<Vec<u8>>,
        pending: Vec<u8>,
        writes: Writes,
    }

    impl Pipe {
        fn pair() -> (Self, Self) {
            let (tx_a, rx_b) = futures::channel::mpsc::unbounded();
            let (tx_b, rx_a) = futures::channel::mpsc::unbounded();
            let writes = std::sync::Arc::default;
            let a = Self { tx: tx_a, rx: rx_a, pending: Vec::new(), writes: writes() };
            let b = Self { tx: tx_b, rx: rx_b, pending: Vec::new(), writes: writes() };
            (a, b)
        }
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            while this.pending.is_empty() {
                match this.rx.poll_next_unpin(cx) {
                    Poll::Ready(Some(bytes)) => this.pending = bytes,
                    Poll::Ready(None) => return Poll::Ready(Ok(0)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let n = buf.len().min(this.pending.len());
            buf[..n].copy_from_slice(&this.pending[..n]);
            this.pending.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes.lock().unwrap().push(buf.len());
            let sent = this.tx.unbounded_send(buf.to_vec());
            Poll::Ready(sent.map(|()| buf.len()).map_err(|_| io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().tx.close_channel();
            Poll::Ready(Ok(()))
        }
    }
}

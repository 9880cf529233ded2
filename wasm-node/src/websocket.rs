//! A libp2p transport over the browser's `WebSocket`, for dialling relays at `/ws` and `/wss`
//! addresses, in a window or a worker.
//!
//! Written for throughput: a browser `WebSocket` has no event for "the send buffer drained",
//! so writes go on while `bufferedAmount` stays under [`SEND_HIGH_WATER`] and, above it, wait
//! for a short timer before looking again, instead of waiting for the buffer to empty. Reads
//! are copied straight from each message into one buffer, bounded by [`MAX_READ_BUFFER`]: the
//! browser cannot pause a WebSocket, so yamux's flow control (the windows this node grants)
//! is what keeps the remote within it.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// Bytes the browser may hold unsent before writes wait.
pub const SEND_HIGH_WATER: u32 = 8 << 20;
/// How long a write waits before looking at the send buffer again.
const SEND_RETRY: Duration = Duration::from_millis(2);
/// Writes are gathered into messages of up to this many bytes: every `send` costs the browser
/// a message to its network process, and libp2p writes in frames of 16 KiB.
const MAX_MESSAGE: usize = 256 << 10;
/// The most bytes received and not yet read; a remote past it is dropped.
pub const MAX_READ_BUFFER: usize = 64 << 20;

/// Dials `/ws` and `/wss` addresses; listens on nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transport;

type Dial = Pin<Box<dyn Future<Output = io::Result<Connection>> + Send>>;

impl libp2p::core::Transport for Transport {
    type Output = Connection;
    type Error = io::Error;
    type ListenerUpgrade = std::future::Ready<io::Result<Connection>>;
    type Dial = Dial;

    fn listen_on(
        &mut self,
        _: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        false
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Dial, TransportError<io::Error>> {
        if opts.role.is_listener() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let url = url_of(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        Ok(SendWrapper::new(Connection::open(url)).boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Poll::Pending
    }
}

/// The `ws://` or `wss://` URL of a multiaddr, or `None` if it is not a WebSocket address.
pub fn url_of(addr: &Multiaddr) -> Option<String> {
    let mut parts = addr.iter();
    let host = match (parts.next()?, parts.next()?) {
        (Protocol::Ip4(ip), Protocol::Tcp(port)) => format!("{ip}:{port}"),
        (Protocol::Ip6(ip), Protocol::Tcp(port)) => format!("[{ip}]:{port}"),
        (Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h), Protocol::Tcp(port)) => {
            format!("{h}:{port}")
        }
        _ => return None,
    };
    let (scheme, path) = match (parts.next()?, parts.next()) {
        (Protocol::Tls, Some(Protocol::Ws(path))) => ("wss", path),
        (Protocol::Ws(path), _) => ("ws", path),
        (Protocol::Wss(path), _) => ("wss", path),
        _ => return None,
    };
    Some(format!("{scheme}://{host}{path}"))
}

/// What the socket's event handlers share with the connection.
#[derive(Default)]
struct Shared {
    read: BytesMut,
    open: bool,
    /// Why the socket is unusable, once it is.
    failed: Option<String>,
    closed: bool,
    reader: Option<Waker>,
    opener: Option<Waker>,
}

impl Shared {
    fn wake_all(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.opener.take() {
            w.wake();
        }
    }
}

/// The event handlers, kept alive as long as the socket.
struct Handlers {
    _open: Closure<dyn FnMut()>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _error: Closure<dyn FnMut()>,
    _close: Closure<dyn FnMut(CloseEvent)>,
}

struct Inner {
    socket: WebSocket,
    shared: Rc<RefCell<Shared>>,
    _handlers: Handlers,
    retry: Option<futures_timer::Delay>,
    /// Bytes written and not yet sent, sent when full or flushed.
    pending: Vec<u8>,
}

impl Inner {
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let sent = self.socket.send_with_u8_array(&self.pending);
        self.pending.clear();
        sent.map_err(|_| broken("the WebSocket refused to send"))
    }
}

/// An open WebSocket connection.
pub struct Connection {
    inner: SendWrapper<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("url", &self.inner.socket.url()).finish()
    }
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, why.to_owned())
}

impl Connection {
    /// Opens a socket to `url` and waits until it is open.
    async fn open(url: String) -> io::Result<Self> {
        let socket = WebSocket::new(&url).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("invalid WebSocket URL {url}"))
        })?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let shared = Rc::new(RefCell::new(Shared::default()));
        let handlers = Handlers {
            _open: {
                let shared = Rc::clone(&shared);
                Closure::new(move || {
                    let mut s = shared.borrow_mut();
                    s.open = true;
                    s.wake_all();
                })
            },
            _message: {
                let shared = Rc::clone(&shared);
                Closure::new(move |event: MessageEvent| {
                    let data = js_sys::Uint8Array::new(&event.data());
                    let mut s = shared.borrow_mut();
                    let len = data.length() as usize;
                    if s.read.len() + len > MAX_READ_BUFFER {
                        s.failed = Some("the remote sent more than this node reads".into());
                    } else {
                        let start = s.read.len();
                        s.read.resize(start + len, 0);
                        data.copy_to(&mut s.read[start..]);
                    }
                    s.wake_all();
                })
            },
            _error: {
                let shared = Rc::clone(&shared);
                Closure::new(move || {
                    let mut s = shared.borrow_mut();
                    s.failed.get_or_insert_with(|| "the WebSocket failed".into());
                    s.wake_all();
                })
            },
            _close: {
                let shared = Rc::clone(&shared);
                Closure::new(move |_: CloseEvent| {
                    let mut s = shared.borrow_mut();
                    s.closed = true;
                    s.wake_all();
                })
            },
        };
        socket.set_onopen(Some(handlers._open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(handlers._message.as_ref().unchecked_ref()));
        socket.set_onerror(Some(handlers._error.as_ref().unchecked_ref()));
        socket.set_onclose(Some(handlers._close.as_ref().unchecked_ref()));
        let connection = Self {
            inner: SendWrapper::new(Inner {
                socket,
                shared,
                _handlers: handlers,
                retry: None,
                pending: Vec::with_capacity(MAX_MESSAGE),
            }),
        };
        futures::future::poll_fn(|cx| {
            let mut s = connection.inner.shared.borrow_mut();
            if s.open {
                Poll::Ready(Ok(()))
            } else if let Some(why) = &s.failed {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{url}: {why}"),
                )))
            } else if s.closed {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{url}: closed"),
                )))
            } else {
                s.opener = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await?;
        Ok(connection)
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.inner.shared.borrow_mut();
        if !s.read.is_empty() {
            let n = buf.len().min(s.read.len());
            s.read.copy_to_slice(&mut buf[..n]);
            return Poll::Ready(Ok(n));
        }
        if let Some(why) = &s.failed {
            return Poll::Ready(Err(broken(why)));
        }
        if s.closed {
            return Poll::Ready(Ok(0));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut *self.get_mut().inner;
        {
            let s = inner.shared.borrow();
            if let Some(why) = &s.failed {
                return Poll::Ready(Err(broken(why)));
            }
            if s.closed {
                return Poll::Ready(Err(broken("the WebSocket is closed")));
            }
        }
        // Above the high-water mark, look again after a short wait: the browser gives no
        // event when its send buffer drains.
        while inner.socket.buffered_amount() >= SEND_HIGH_WATER {
            let retry = inner.retry.get_or_insert_with(|| futures_timer::Delay::new(SEND_RETRY));
            if Pin::new(retry).poll(cx).is_pending() {
                return Poll::Pending;
            }
            inner.retry = None;
        }
        let n = buf.len().min(MAX_MESSAGE - inner.pending.len());
        inner.pending.extend_from_slice(&buf[..n]);
        if inner.pending.len() == MAX_MESSAGE {
            inner.send_pending()?;
        }
        Poll::Ready(Ok(n))
    }

    /// Sends what was gathered; once handed to the browser, it is on its way.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().inner.send_pending())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut *self.get_mut().inner;
        let flushed = inner.send_pending();
        let _ = inner.socket.close_with_code(1000);
        Poll::Ready(flushed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onerror(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close_with_code(1000);
    }
}

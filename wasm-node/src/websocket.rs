//! A libp2p transport over the browser's `WebSocket`, for dialling relays at `/ws` and `/wss`
//! addresses, in a window or a worker.
//!
//! Written for throughput:
//! - A browser moves a socket's bytes on the thread that owns the socket: a socket of the
//!   node's own thread stands still while that thread seals and codes (measured: a worker
//!   busy 1 ms in every 1.3 ms sends at 135 instead of 212 MB/s). So each socket is owned by a
//!   small pump worker of its own, which is never busy, and bytes cross to it and back as
//!   transferred `ArrayBuffer`s; the pump gives each buffer back once sent, and the node
//!   reuses it (filling fresh memory costs several times a plain copy). Where no worker can
//!   start (a content security policy without `blob:` in `worker-src`), the socket stays on
//!   the node's thread.
//! - libp2p writes and flushes frame by frame (Noise frames are under 64 KiB, and yamux's
//!   headers are written apart from their bodies); what is written in one turn of the event loop
//!   goes out as one message (up to [`MAX_MESSAGE`]), sent from a microtask, since the
//!   browser's cost is per message more than per byte.
//! - Writes go on while fewer than [`SEND_HIGH_WATER`] bytes wait to be sent: a pump reports
//!   what it has sent on; a socket of this thread's has no event for "the send buffer
//!   drained", so its `bufferedAmount` is looked at again after a short timer.
//! - Reads are copied straight from each message into one buffer, bounded by
//!   [`MAX_READ_BUFFER`]: the browser cannot pause a WebSocket, so yamux's flow control (the
//!   windows this node grants) is what keeps the remote within it.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{AsyncRead, AsyncWrite, FutureExt};
use js_sys::Reflect;
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use send_wrapper::SendWrapper;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::helper_worker::Spares;

/// Bytes the browser may hold unsent before writes wait.
pub const SEND_HIGH_WATER: u64 = 8 << 20;
/// How long a write waits before looking at the send buffer again.
const SEND_RETRY: Duration = Duration::from_millis(2);
/// Writes are gathered into messages of up to this many bytes: every `send` costs the browser
/// a message to its network process, and libp2p writes in frames of under 64 KiB.
const MAX_MESSAGE: usize = 256 << 10;
/// The most bytes of spare buffers kept for the pump (as much again as may wait unsent).
const MAX_SPARE: usize = 8 << 20;
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
    /// The pump worker could not start here (a policy forbids it, or there is no `Worker`).
    pump_failed: bool,
    /// Bytes handed to a pump worker, and how many of those it has sent on.
    handed: u64,
    drained: u64,
    /// Buffers the pump worker has sent on and given back, to carry later messages.
    spares: Spares<MAX_SPARE>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    opener: Option<Waker>,
}

impl Shared {
    fn wake_all(&mut self) {
        for waker in
            [self.reader.take(), self.writer.take(), self.opener.take()].into_iter().flatten()
        {
            waker.wake();
        }
    }

    /// Takes the bytes of one received message, or fails the connection past the bound.
    fn received(&mut self, data: &js_sys::Uint8Array) {
        let len = data.length() as usize;
        if self.read.len() + len > MAX_READ_BUFFER {
            self.failed = Some("the remote sent more than this node reads".into());
        } else {
            let start = self.read.len();
            self.read.resize(start + len, 0);
            data.copy_to(&mut self.read[start..]);
        }
        self.wake_all();
    }
}

/// The script of a pump worker: it owns one WebSocket and passes its bytes to and from the
/// node. A browser moves a socket's bytes in and out on the thread that owns the socket, so a
/// socket owned by the node's thread stands still while that thread seals and codes; this
/// thread is never busy.
const PUMP: &str = r#"
let ws;
let handed = 0;
let timer = 0;
const report = () => {
  timer = 0;
  postMessage({ drained: handed - ws.bufferedAmount });
  if (ws.bufferedAmount > 0) timer = setTimeout(report, 1);
};
onmessage = ({ data }) => {
  if (data instanceof Uint8Array) {
    ws.send(data);
    handed += data.byteLength;
    postMessage({ spare: data.buffer }, [data.buffer]);
    if (!timer) timer = setTimeout(report, 1);
  } else if (data === 'close') {
    ws?.close(1000);
  } else {
    try {
      ws = new WebSocket(data);
    } catch (e) {
      postMessage({ error: String(e?.message ?? e) });
      return;
    }
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => postMessage({ open: true });
    ws.onmessage = ({ data }) => postMessage(data, [data]);
    ws.onerror = () => postMessage({ error: 'the WebSocket failed' });
    ws.onclose = () => {
      postMessage({ closed: true });
      close();
    };
  }
};
"#;

/// Where written bytes go: a WebSocket of this thread's, or one a pump worker owns.
enum Socket {
    Direct(WebSocket),
    Pumped(web_sys::Worker),
}

impl Socket {
    /// Hands `bytes` over as one message.
    fn send(&self, bytes: &[u8], shared: &RefCell<Shared>) -> Result<(), JsValue> {
        match self {
            Socket::Direct(ws) => ws.send_with_u8_array(bytes),
            Socket::Pumped(worker) => {
                let view = shared.borrow_mut().spares.copy_out(bytes);
                worker.post_message_with_transfer(&view, &js_sys::Array::of1(&view.buffer()))?;
                shared.borrow_mut().handed += bytes.len() as u64;
                Ok(())
            }
        }
    }

    /// Bytes handed over and not yet sent on.
    fn unsent(&self, shared: &Shared) -> u64 {
        match self {
            Socket::Direct(ws) => u64::from(ws.buffered_amount()),
            Socket::Pumped(_) => shared.handed.saturating_sub(shared.drained),
        }
    }

    fn close(&self) {
        let _ = match self {
            Socket::Direct(ws) => ws.close_with_code(1000),
            Socket::Pumped(worker) => worker.post_message(&"close".into()),
        };
    }

    /// Stops delivering events to the connection.
    fn detach(&self) {
        match self {
            Socket::Direct(ws) => {
                ws.set_onopen(None);
                ws.set_onmessage(None);
                ws.set_onerror(None);
                ws.set_onclose(None);
            }
            Socket::Pumped(worker) => {
                worker.set_onmessage(None);
                worker.set_onerror(None);
            }
        }
    }
}

type Handler = Closure<dyn FnMut(JsValue)>;

/// Opens a socket to a URL and wires its events to the shared state.
type Opener = fn(&str, &Rc<RefCell<Shared>>) -> io::Result<(Socket, Vec<Handler>)>;

/// Opens `url` on a socket of this thread's, with its event handlers.
fn direct(url: &str, shared: &Rc<RefCell<Shared>>) -> io::Result<(Socket, Vec<Handler>)> {
    let socket = WebSocket::new(url).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("invalid WebSocket URL {url}"))
    })?;
    socket.set_binary_type(BinaryType::Arraybuffer);
    let on = |f: fn(&mut Shared, JsValue)| {
        let shared = Rc::clone(shared);
        Handler::new(move |event: JsValue| {
            let mut s = shared.borrow_mut();
            f(&mut s, event);
            s.wake_all();
        })
    };
    let handlers = vec![
        on(|s, _| s.open = true),
        on(|s, event| {
            let data = event.unchecked_into::<MessageEvent>().data();
            s.received(&js_sys::Uint8Array::new(&data));
        }),
        on(|s, _| {
            s.failed.get_or_insert_with(|| "the WebSocket failed".into());
        }),
        on(|s, _| s.closed = true),
    ];
    let [open, message, error, close] = [0, 1, 2, 3].map(|i| handlers[i].as_ref().unchecked_ref());
    socket.set_onopen(Some(open));
    socket.set_onmessage(Some(message));
    socket.set_onerror(Some(error));
    socket.set_onclose(Some(close));
    Ok((Socket::Direct(socket), handlers))
}

/// Opens `url` on a socket a pump worker owns; `Unsupported` if no pump can start here.
fn pumped(url: &str, shared: &Rc<RefCell<Shared>>) -> io::Result<(Socket, Vec<Handler>)> {
    let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "no pump worker here");
    let worker = crate::helper_worker::start(PUMP).ok_or_else(unsupported)?;
    let message = {
        let shared = Rc::clone(shared);
        Handler::new(move |event: JsValue| {
            let data = event.unchecked_into::<MessageEvent>().data();
            let mut s = shared.borrow_mut();
            if data.is_instance_of::<js_sys::ArrayBuffer>() {
                return s.received(&js_sys::Uint8Array::new(&data));
            }
            let field = |name: &str| Reflect::get(&data, &name.into()).unwrap_or_default();
            if let Some(drained) = field("drained").as_f64() {
                s.drained = drained as u64;
            } else if let Ok(buffer) = field("spare").dyn_into::<js_sys::ArrayBuffer>() {
                return s.spares.keep(buffer);
            } else if field("open").is_truthy() {
                s.open = true;
            } else if field("closed").is_truthy() {
                s.closed = true;
            } else {
                let why =
                    field("error").as_string().unwrap_or_else(|| "the WebSocket failed".into());
                s.failed.get_or_insert(why);
            }
            s.wake_all();
        })
    };
    let error = {
        let shared = Rc::clone(shared);
        Handler::new(move |_: JsValue| {
            let mut s = shared.borrow_mut();
            s.pump_failed = true;
            s.failed.get_or_insert_with(|| "the pump worker failed".into());
            s.wake_all();
        })
    };
    worker.set_onmessage(Some(message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(error.as_ref().unchecked_ref()));
    worker.post_message(&url.into()).map_err(|_| unsupported())?;
    Ok((Socket::Pumped(worker), vec![message, error]))
}

struct Inner {
    socket: Rc<Socket>,
    shared: Rc<RefCell<Shared>>,
    _handlers: Vec<Handler>,
    retry: Option<futures_timer::Delay>,
    out: Rc<RefCell<Outgoing>>,
    /// Sends what was gathered, run as a microtask after a flush. Owned by the JS side, so
    /// that a microtask still queued when the connection is dropped finds it alive.
    send_later: js_sys::Function,
    queue_microtask: js_sys::Function,
}

/// Bytes written and not yet handed to the socket.
struct Outgoing {
    socket: Rc<Socket>,
    shared: Rc<RefCell<Shared>>,
    pending: Vec<u8>,
    /// Whether a microtask will send `pending`.
    scheduled: bool,
}

impl Outgoing {
    /// Hands what was gathered over as one message. A refusal makes the connection unusable.
    fn send(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let sent = self.socket.send(&self.pending, &self.shared);
        self.pending.clear();
        sent.map_err(|_| {
            let why = "the WebSocket refused to send";
            let mut s = self.shared.borrow_mut();
            s.failed.get_or_insert_with(|| why.into());
            s.wake_all();
            broken(why)
        })
    }
}

impl Inner {
    /// Sends what was gathered at the end of this turn of the event loop, so that every frame
    /// the node writes in one turn (libp2p flushes after each of them, ~16 KiB) goes out as
    /// one message: the browser's cost is per message, not per byte.
    fn send_soon(&mut self) -> io::Result<()> {
        let mut out = self.out.borrow_mut();
        if out.pending.is_empty() || out.scheduled {
            return Ok(());
        }
        out.scheduled = true;
        self.queue_microtask.call1(&JsValue::UNDEFINED, &self.send_later).map(drop).or_else(|_| {
            out.scheduled = false;
            out.send()
        })
    }
}

/// An open WebSocket connection.
pub struct Connection {
    inner: SendWrapper<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match *self.inner.socket {
            Socket::Direct(_) => "direct",
            Socket::Pumped(_) => "pumped",
        };
        f.debug_struct("Connection").field("socket", &how).finish()
    }
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, why.to_owned())
}

impl Connection {
    /// Opens a socket to `url` and waits until it is open: owned by a pump worker where one
    /// can start, else by this thread.
    async fn open(url: String) -> io::Result<Self> {
        match Self::open_with(&url, pumped).await {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::debug!(%url, "no pump worker: the socket runs on the node's thread");
                Self::open_with(&url, direct).await
            }
            opened => opened,
        }
    }

    async fn open_with(url: &str, make: Opener) -> io::Result<Self> {
        let shared = Rc::new(RefCell::new(Shared::default()));
        let (socket, handlers) = make(url, &shared)?;
        let socket = Rc::new(socket);
        let out = Rc::new(RefCell::new(Outgoing {
            socket: Rc::clone(&socket),
            shared: Rc::clone(&shared),
            pending: Vec::with_capacity(MAX_MESSAGE),
            scheduled: false,
        }));
        let send_later = {
            let out = Rc::clone(&out);
            Closure::<dyn FnMut()>::new(move || {
                let mut out = out.borrow_mut();
                out.scheduled = false;
                let _ = out.send();
            })
            .into_js_value()
            .unchecked_into::<js_sys::Function>()
        };
        let queue_microtask = Reflect::get(&js_sys::global(), &"queueMicrotask".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or_else(|| io::Error::other("this browser has no queueMicrotask"))?;
        let connection = Self {
            inner: SendWrapper::new(Inner {
                socket,
                shared,
                _handlers: handlers,
                retry: None,
                out,
                send_later,
                queue_microtask,
            }),
        };
        futures::future::poll_fn(|cx| {
            let mut s = connection.inner.shared.borrow_mut();
            let refused = |why: &str| {
                let kind = if s.pump_failed {
                    io::ErrorKind::Unsupported
                } else {
                    io::ErrorKind::ConnectionRefused
                };
                Poll::Ready(Err(io::Error::new(kind, format!("{url}: {why}"))))
            };
            if s.open {
                Poll::Ready(Ok(()))
            } else if let Some(why) = &s.failed {
                refused(why)
            } else if s.closed {
                refused("closed")
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
        // Above the high-water mark, wait: a pump tells when it has sent bytes on; a socket of
        // this thread's gives no event when its send buffer drains, so look again shortly.
        loop {
            let mut s = inner.shared.borrow_mut();
            if inner.socket.unsent(&s) < SEND_HIGH_WATER {
                break;
            }
            if let Socket::Pumped(_) = *inner.socket {
                s.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            drop(s);
            let retry = inner.retry.get_or_insert_with(|| futures_timer::Delay::new(SEND_RETRY));
            if Pin::new(retry).poll(cx).is_pending() {
                return Poll::Pending;
            }
            inner.retry = None;
        }
        let mut out = inner.out.borrow_mut();
        let n = buf.len().min(MAX_MESSAGE - out.pending.len());
        out.pending.extend_from_slice(&buf[..n]);
        if out.pending.len() == MAX_MESSAGE {
            out.send()?;
        }
        Poll::Ready(Ok(n))
    }

    /// Sends what was gathered before this turn of the event loop ends; from then on, it is
    /// the browser's to deliver.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().inner.send_soon())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut *self.get_mut().inner;
        let flushed = inner.out.borrow_mut().send();
        inner.socket.close();
        Poll::Ready(flushed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.socket.detach();
        self.socket.close();
    }
}

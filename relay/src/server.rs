//! The relay's HTTP connections, each bounded. At most [`Limits::connections`] are served at
//! once; past that, new ones wait to be accepted. A request's headers must arrive within
//! [`Limits::headers`], which is also how long a connection may sit idle between requests, so
//! neither silent nor slowly dripping clients keep a connection. A reply whose reader takes no
//! bytes for [`Limits::stall`] is cut off (see [`Guarded`]). Stopping closes idle connections
//! at once and lets each of the others finish its request.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::stall::Guarded;

/// The longest a request's headers may take, and a connection may sit idle between requests
/// (unless the request timeout is shorter): browsers close their own idle connections sooner,
/// and an idle one holds one of the server's connection slots.
pub const IDLE: Duration = Duration::from_secs(20);

/// What bounds each connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time a request's headers may take, counted from when the connection is ready for them
    /// (so also the time it may sit idle between requests).
    pub headers: Duration,
    /// Time a reply may wait for its reader to take a byte.
    pub stall: Duration,
}

/// Serves `app` on the connections `listener` accepts until `stop` resolves, then waits for
/// the connections to finish.
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections.clamp(1, Semaphore::MAX_PERMITS)));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stop = pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(io::Error::other)?,
        };
        // Accept errors (out of file descriptors, say) are waited out by axum's listener.
        let (socket, _) = tokio::select! {
            () = &mut stop => break,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        let _ = socket.set_nodelay(true);
        let io = TokioIo::new(Guarded::new(socket, limits.stall));
        let service = TowerToHyperService::new(app.clone());
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.headers);
            let mut connection = pin!(builder.serve_connection(io, service));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                    return;
                }
                _ = closed.wait_for(|closed| *closed) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
        // Connections that ended are reaped as new ones come.
        while connections.try_join_next().is_some() {}
    }
    // New connections are refused from now on, not left waiting for the stop to finish.
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n";

    /// A server of `Ok` at `/`, with `connections` slots and a header limit of `headers`; and
    /// what stops it.
    async fn server(
        connections: usize,
        headers: Duration,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<io::Result<()>>)
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let limits = Limits { connections, headers, stall: Duration::from_secs(30) };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    /// Reads one reply to [`REQUEST`] (a short one: "ok") off `tcp`.
    async fn reply(tcp: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"ok") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the reply: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    /// How long `tcp` stays open, reading whatever comes, up to `at_most`.
    async fn open_for(tcp: &mut TcpStream, at_most: Duration) -> Duration {
        open_for_reading(tcp, at_most, &mut Vec::new()).await
    }

    /// [`open_for`], keeping what was read in `got`.
    async fn open_for_reading(
        tcp: &mut TcpStream,
        at_most: Duration,
        got: &mut Vec<u8>,
    ) -> Duration {
        let started = Instant::now();
        let _ = tokio::time::timeout(at_most, tcp.read_to_end(got)).await;
        started.elapsed()
    }

    /// A client that sends nothing, one that drips its headers a byte at a time, and one idle
    /// after a request are all closed once the header limit has passed; within it, a
    /// connection serves request after request.
    #[tokio::test]
    async fn silent_slow_and_idle_connections_are_closed_after_the_header_limit() {
        let limit = Duration::from_millis(600);
        let (addr, stop, task) = server(8, limit).await;

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut dripping = TcpStream::connect(addr).await.unwrap();
        let drip = tokio::spawn(async move {
            for byte in REQUEST.iter().cycle().take(64) {
                if dripping.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut got = Vec::new();
            let open = open_for_reading(&mut dripping, Duration::from_secs(10), &mut got).await;
            (open, got)
        });
        let mut served = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            served.write_all(REQUEST).await.unwrap();
            assert!(reply(&mut served).await.starts_with("HTTP/1.1 200"));
            tokio::time::sleep(limit / 3).await;
        }

        let at_most = Duration::from_secs(10);
        assert!(open_for(&mut silent, at_most).await < at_most, "the silent client stays");
        let (open, got) = drip.await.unwrap();
        assert!(open < at_most, "the dripping client stays");
        // Cut off before its headers were whole, a byte every 100 ms: never answered.
        assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{got:?}");
        assert!(open_for(&mut served, at_most).await < at_most, "the idle client stays");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    /// Past the limit of connections, a new one is served only once one ends; stopping
    /// closes the idle ones at once.
    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_slot() {
        let (addr, stop, task) = server(2, Duration::from_secs(30)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(REQUEST).await.unwrap();
        reply(&mut first).await;
        let second = TcpStream::connect(addr).await.unwrap();
        // Accepted by the kernel, not yet by the server.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(REQUEST).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), reply(&mut third)).await;
        assert!(early.is_err(), "a third connection was served beside two");
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(10), reply(&mut third)).await;
        assert!(served.expect("served once a slot is free").starts_with("HTTP/1.1 200"));

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("idle connections do not hold the stop")
            .unwrap()
            .unwrap();
        drop(second);
    }
}

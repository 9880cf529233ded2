//! Native transfer benchmark: `shardweb put` and `get` of one file through a local relay,
//! beside a plain HTTP upload and download of the same bytes to a local axum endpoint, in one
//! run, with the peak resident memory of the client and the relay. The put runs twice: as it
//! does by default (shards by signed HTTP posts) and with `--no-http` (over libp2p).
//!
//! The plain transfers run twice: writing through the page cache (what a plain server does),
//! and past it (`O_DIRECT`, as the relay writes shards and `get` writes files; see
//! `shardweb_relay::direct`). On a virtual machine whose host takes back free guest memory,
//! page-cache writes swing with how much recently freed memory there is to reuse; the second
//! pair is the steadier reference.
//!
//! ```sh
//! cargo build --release -p shardweb && cargo bench -p shardweb-tests --bench transfer
//! ```
//! `SHARDWEB_BENCH_MIB` sets the file size (default 1024), `SHARDWEB_BENCH_ROUNDS` the number
//! of rounds (default 3), each of which runs all six transfers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use futures::StreamExt;
use shardweb_tests::{Relay, binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let mib = env("SHARDWEB_BENCH_MIB", 1024);
    let rounds = env("SHARDWEB_BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir_in(".").expect("temp dir");
    let file = dir.path().join("in.bin");
    write_random(&file, mib << 20);
    let bytes = (mib << 20) as f64;
    let rate = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    println!(
        "shardweb transfer benchmark: {mib} MiB file, loopback, release build, \
         median of {rounds} interleaved rounds"
    );

    let relay = Relay::start(
        &dir.path().join("relay"),
        &["--max-storage", "1000000000000", "--max-storage-per-peer", "1000000000000"],
    );
    let url = relay.url();
    let (mut up, mut down, mut put, mut get) = (vec![], vec![], vec![], vec![]);
    let mut put_libp2p = vec![];
    let (mut up_direct, mut down_direct) = (vec![], vec![]);
    let (mut put_rss, mut get_rss, mut same) = (0, 0, true);
    for _ in 0..rounds {
        for direct in [false, true] {
            let (u, d) = plain_http(dir.path(), &file, direct);
            if direct {
                up_direct.push(u);
                down_direct.push(d);
            } else {
                up.push(u);
                down.push(d);
            }
            let _ = fs::remove_file(dir.path().join("plain.bin"));
            let _ = fs::remove_file(dir.path().join("plain-out.bin"));
        }

        let file_arg = file.to_str().unwrap_or_default();
        let (time, rss, _) = timed(dir.path(), &["put", file_arg, "--relay", &url, "--no-http"]);
        put_libp2p.push(time);
        put_rss = put_rss.max(rss);
        let (time, rss, link) = timed(dir.path(), &["put", file_arg, "--relay", &url]);
        put.push(time);
        put_rss = put_rss.max(rss);
        let (time, rss, _) =
            timed(dir.path(), &["get", link.trim(), "-o", "out.bin", "--relay", &url]);
        get.push(time);
        get_rss = get_rss.max(rss);
        same &= files_equal(&file, &dir.path().join("out.bin"));
        let _ = fs::remove_file(dir.path().join("out.bin"));
    }
    let relay_rss = relay.pid().and_then(peak_rss).unwrap_or(0);
    let (up, down, put, get) = (median(up), median(down), median(put), median(get));
    let put_libp2p = median(put_libp2p);
    let (up_direct, down_direct) = (median(up_direct), median(down_direct));
    let share = |base: Duration, ours: Duration| 100.0 * base.as_secs_f64() / ours.as_secs_f64();
    println!("  plain HTTP upload (axum, streamed to disk)   {:>8.0} MB/s", rate(up));
    println!("  plain HTTP download (axum, streamed)         {:>8.0} MB/s", rate(down));
    println!("  plain HTTP upload, past the page cache       {:>8.0} MB/s", rate(up_direct));
    println!("  plain HTTP download, past the page cache     {:>8.0} MB/s", rate(down_direct));
    println!(
        "  shardweb put (4, 2)                          {:>8.0} MB/s  {:>5.0} % of plain, {:.0} % past the cache",
        rate(put),
        share(up, put),
        share(up_direct, put)
    );
    println!(
        "  shardweb put (4, 2) --no-http (libp2p)       {:>8.0} MB/s  {:>5.0} % of plain, {:.0} % past the cache",
        rate(put_libp2p),
        share(up, put_libp2p),
        share(up_direct, put_libp2p)
    );
    println!(
        "  shardweb get (4, 2)                          {:>8.0} MB/s  {:>5.0} % of plain, {:.0} % past the cache",
        rate(get),
        share(down, get),
        share(down_direct, get)
    );
    println!(
        "  peak RSS: put client {} MiB, get client {} MiB, relay {} MiB",
        put_rss >> 10,
        get_rss >> 10,
        relay_rss >> 10
    );
    println!("  bytes identical after every round trip: {same}");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn write_random(path: &Path, len: usize) {
    let mut f = fs::File::create(path).expect("create input");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..len >> 20 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf).expect("write input");
    }
    f.sync_all().expect("sync input");
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let hash = |p: &Path| {
        fs::File::open(p).ok().and_then(|f| {
            let mut h = blake3::Hasher::new();
            h.update_reader(f).ok()?;
            Some(h.finalize())
        })
    };
    hash(a).is_some() && hash(a) == hash(b)
}

/// Runs a `shardweb` client command; returns its time, peak RSS in KiB and stdout.
fn timed(dir: &Path, args: &[&str]) -> (Duration, u64, String) {
    let start = Instant::now();
    let mut child = Command::new(binary("shardweb"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardweb");
    let pid = child.id();
    let mut rss = 0;
    while child.try_wait().ok().flatten().is_none() {
        rss = rss.max(peak_rss(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().expect("shardweb output");
    assert!(
        out.status.success(),
        "shardweb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, rss, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Upload and download `file` through a plain axum endpoint that streams to and from disk;
/// with `direct`, both ends write their file past the page cache.
fn plain_http(dir: &Path, file: &Path, direct: bool) -> (Duration, Duration) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let stored = dir.join("plain.bin");
        let app = Router::new()
            .route("/upload", post(upload))
            .route("/download", get(download))
            .with_state((stored.clone(), direct));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let len = fs::metadata(file).expect("input").len();

        let start = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("send head");
        let mut f = tokio::fs::File::open(file).await.expect("open");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.expect("send");
        }
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.expect("reply");
        let up = start.elapsed();

        let start = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("get");
        let out = dir.join("plain-out.bin");
        let mut out = Out::new(fs::File::create(&out).expect("create"), &out, direct);
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            tokio::task::block_in_place(|| out.write_all(&buf[..n]));
        }
        tokio::task::block_in_place(|| out.finish());
        (up, start.elapsed())
    })
}

async fn upload(State((path, direct)): State<(PathBuf, bool)>, body: Body) -> &'static str {
    let mut out = Out::new(fs::File::create(&path).expect("create"), &path, direct);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        tokio::task::block_in_place(|| out.write_all(&chunk.expect("body")));
    }
    tokio::task::block_in_place(|| out.finish());
    "ok"
}

async fn download(State((path, _)): State<(PathBuf, bool)>) -> Body {
    let file = tokio::fs::File::open(path).await.expect("open");
    Body::from_stream(tokio_util_stream(file))
}

/// A file written through the page cache, or past it.
enum Out {
    Cached(fs::File),
    Direct(shardweb_relay::direct::Writer),
}

impl Out {
    fn new(file: fs::File, path: &Path, direct: bool) -> Self {
        if direct {
            Self::Direct(shardweb_relay::direct::Writer::new(file, path))
        } else {
            Self::Cached(file)
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        match self {
            Self::Cached(file) => file.write_all(bytes),
            Self::Direct(writer) => writer.write_all(bytes),
        }
        .expect("write");
    }

    fn finish(self) {
        let file = match self {
            Self::Cached(file) => file,
            Self::Direct(writer) => writer.finish().expect("write"),
        };
        file.sync_all().expect("sync");
    }
}

/// The file as a stream of 1 MiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

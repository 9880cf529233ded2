//! shardweb-tests: end-to-end tests that run shardweb's real binaries as separate processes on
//! loopback. Every process is bounded in time and killed when its handle drops.
//!
//! The binaries are the ones in the target directory next to the test executables;
//! `cargo test --workspace` builds `shardweb` there (the relay package has integration tests).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of workspace binary `name` in the same profile as this test build.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from);
    let path = profile_dir.unwrap_or_default().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p shardweb`) first",
        path.display()
    );
    path
}

/// Runs `shardweb` with `args` in `dir`, killing it if it outlives `timeout`.
pub fn shardweb_in(dir: &Path, args: &[&str], timeout: Duration) -> Output {
    wait_shardweb(spawn_shardweb_in(dir, args), timeout)
}

/// Starts `shardweb` with `args` in `dir`, its output piped, for [`wait_shardweb`] to collect.
pub fn spawn_shardweb_in(dir: &Path, args: &[&str]) -> Child {
    Command::new(binary("shardweb"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start shardweb: {e}"))
}

/// Waits for a `shardweb` from [`spawn_shardweb_in`], killing it if it outlives `timeout`.
pub fn wait_shardweb(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardweb did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("cannot read shardweb's output: {e}"))
}

/// Runs `shardweb` with `args`, killing it if it outlives `timeout`.
pub fn shardweb(args: &[&str], timeout: Duration) -> Output {
    shardweb_in(Path::new("."), args, timeout)
}

/// A free loopback TCP port (free when asked; the race with other processes is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A blocking HTTP GET of `path` on a loopback server; the body, or `None` if it failed.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// A `shardweb relay` process on loopback with free ports, killed on drop.
#[derive(Debug)]
pub struct Relay {
    child: Option<Child>,
    /// Its HTTP port.
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
    extra: Vec<String>,
}

impl Relay {
    /// Starts a relay with data in `data` and extra arguments, and waits until it serves.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut relay = Self { child: None, port: free_port(), data: data.to_owned(), extra };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.data.with_extension("log"))
            .unwrap_or_else(|e| panic!("cannot create relay log: {e}"));
        let http = format!("127.0.0.1:{}", self.port);
        let mut args = vec!["relay", "--data-dir"];
        let data = self.data.to_string_lossy().into_owned();
        args.push(&data);
        args.extend(["--http", &http]);
        for listen in [
            "/ip4/127.0.0.1/tcp/0",
            "/ip4/127.0.0.1/tcp/0/ws",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "/ip4/127.0.0.1/udp/0/webrtc-direct",
        ] {
            args.extend(["--listen", listen]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let child = Command::new(binary("shardweb"))
            .args(&args)
            .env("SHARDWEB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start relay: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.info().is_none_or(|i| i["addrs"].as_array().map_or(0, Vec::len) < 4) {
            assert!(
                Instant::now() < deadline,
                "relay did not start: see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The relay's URL, for `--relay`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    /// `/api/info`, parsed.
    pub fn info(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(self.port, "/api/info")?).ok()
    }

    /// `/metrics` value of a metric line that starts with `name`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let text = http_get(self.port, "/metrics")?;
        let line = text.lines().find(|l| l.starts_with(name) && !l.starts_with('#'))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    /// The listen address of `kind` ("tcp" plain TCP, "ws", "quic-v1", "webrtc-direct").
    pub fn addr(&self, kind: &str) -> String {
        let info = self.info().unwrap_or_default();
        let addrs = info["addrs"].as_array().cloned().unwrap_or_default();
        addrs
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| match kind {
                "tcp" => a.contains("/tcp/") && !a.contains("/ws"),
                other => a.contains(&format!("/{other}")),
            })
            .unwrap_or_else(|| panic!("relay has no {kind} address"))
            .to_owned()
    }

    /// Kills the process at once (SIGKILL): no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit (at most 20 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the process (SIGSTOP) when `paused`, or lets it go on (SIGCONT): paused, it
    /// keeps its connections open and answers nothing, as a host whose link went quiet.
    pub fn pause(&self, paused: bool) {
        if let Some(pid) = self.pid() {
            let signal = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
        }
    }

    /// Starts the process again with the same data directory and arguments.
    pub fn restart(&mut self) {
        self.stop();
        self.port = free_port();
        self.spawn();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How long one client command may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// A file of `len` pseudo-random bytes in `dir`.
pub fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// `shardweb put`; returns the link.
pub fn put(dir: &Path, file: &Path, relays: &[&Relay], extra: &[&str]) -> String {
    let relays: Vec<String> = relays.iter().map(|r| r.url()).collect();
    let joined = relays.join(",");
    let mut args = vec!["put", file.to_str().unwrap(), "--relay", &joined];
    args.extend(extra);
    let out = shardweb_in(dir, &args, LIMIT);
    assert!(out.status.success(), "put failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `shardweb get`; returns the output or the one-line error.
pub fn get(dir: &Path, link: &str, relays: &[&Relay], out: &str) -> Result<Vec<u8>, String> {
    let joined = relays.iter().map(|r| r.url()).collect::<Vec<_>>().join(",");
    let result = shardweb_in(dir, &["get", link, "-o", out, "--relay", &joined], LIMIT);
    if result.status.success() {
        Ok(fs::read(dir.join(out)).unwrap())
    } else {
        Err(String::from_utf8_lossy(&result.stderr).into_owned())
    }
}

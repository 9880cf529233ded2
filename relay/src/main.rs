//! `shardweb`: the relay and the command-line client.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::Multiaddr;
use shardweb_core::codec::{self, Encoder, FileId, FileKey, Params};
use shardweb_core::manifest::FileMeta;
use shardweb_core::node::peer::Peer;
use shardweb_core::node::{Download, DownloadError, Upload, fetch_manifest};
use shardweb_core::{Link, Manifest};
use shardweb_relay::client::{Client, http_get, output_path, relay_info};
use shardweb_relay::config::Config;
use shardweb_relay::{direct, http, node};

const DEFAULT_RELAY: &str = "http://127.0.0.1:8080";

/// shardweb: a decentralized, end-to-end encrypted file store.
#[derive(Debug, Parser)]
#[command(name = "shardweb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a relay: store and serve shards, relay circuits, serve the page and the API.
    Relay(RelayArgs),
    /// Upload a file and print its share link.
    Put {
        /// The file to upload.
        file: PathBuf,
        /// Relays to upload to (their HTTP URL); shards are spread over all of them.
        #[arg(long = "relay", default_value = DEFAULT_RELAY, env = "SHARDWEB_RELAY", value_delimiter = ',')]
        relays: Vec<String>,
        /// Data shards per stripe.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Parity shards per stripe: any m shards of a stripe may be lost.
        #[arg(long, default_value_t = 2)]
        m: usize,
        /// Send shards over libp2p only, even to relays that take them over HTTP.
        #[arg(long)]
        no_http: bool,
    },
    /// Download a file from its share link.
    Get {
        /// The share link (`shardweb:…` or a page URL with `#…`).
        link: String,
        /// Where to write: a file, or a directory to put the file in under its own name.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Relays to ask (their HTTP URL).
        #[arg(long = "relay", default_value = DEFAULT_RELAY, env = "SHARDWEB_RELAY", value_delimiter = ',')]
        relays: Vec<String>,
    },
    /// Print what a relay reports about itself.
    Status {
        /// The relay's HTTP URL.
        #[arg(long = "relay", default_value = DEFAULT_RELAY, env = "SHARDWEB_RELAY")]
        relay: String,
    },
    /// Check a share link and print the manifest id it names (the key is never printed).
    Link {
        /// A link in any form: `shardweb:<id>.<key>`, `http://host/#<id>.<key>` or `<id>.<key>`.
        link: String,
    },
}

/// Relay options: each overrides the config file, which overrides the defaults.
#[derive(Debug, Args)]
struct RelayArgs {
    /// A TOML config file.
    #[arg(long, env = "SHARDWEB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./shardweb-data].
    #[arg(long, env = "SHARDWEB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP address for the page and the API [default: 127.0.0.1:8080].
    #[arg(long, env = "SHARDWEB_HTTP")]
    http: Option<SocketAddr>,
    /// The directory of the web page to serve at `/` (the built `www/dist`).
    #[arg(long, env = "SHARDWEB_WWW")]
    www: Option<PathBuf>,
    /// libp2p listen address (repeat for several).
    #[arg(long, env = "SHARDWEB_LISTEN", value_delimiter = ',')]
    listen: Vec<Multiaddr>,
    /// An address to advertise besides the listen addresses (repeat for several).
    #[arg(long, env = "SHARDWEB_EXTERNAL", value_delimiter = ',')]
    external: Vec<Multiaddr>,
    /// A relay to join at start, with /p2p/<peer id> (repeat for several).
    #[arg(long, env = "SHARDWEB_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<Multiaddr>,
    /// Bytes to keep in all [default: 10 GiB].
    #[arg(long, env = "SHARDWEB_MAX_STORAGE")]
    max_storage: Option<u64>,
    /// Bytes one peer may store [default: 2 GiB].
    #[arg(long, env = "SHARDWEB_MAX_STORAGE_PER_PEER")]
    max_storage_per_peer: Option<u64>,
}

impl RelayArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(http) = self.http {
            config.http = http;
        }
        if let Some(www) = self.www {
            config.www = Some(www);
        }
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        config.external.extend(self.external);
        config.bootstrap.extend(self.bootstrap);
        if let Some(n) = self.max_storage {
            config.max_storage = n;
        }
        if let Some(n) = self.max_storage_per_peer {
            config.max_storage_per_peer = n;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDWEB_LOG").unwrap_or_else(|_| {
        let default = if matches!(cli.command, Command::Relay(_)) { "info" } else { "warn" };
        tracing_subscriber::EnvFilter::new(default)
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shardweb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shardweb: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Transfers churn through buffers of a few MiB. glibc serves those with fresh mappings and
/// unmaps them on free, so every buffer pays a page fault per 4 KiB: measured here, that was
/// most of a download's CPU time. Keeping them on the heap (and not trimming it eagerly) lets
/// freed buffers be reused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator thresholds, and runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Relay(args) => relay(args.config()?).await,
        Command::Put { file, relays, k, m, no_http } => {
            let link = put(&relays, &file, Params::new(k, m)?, !no_http).await?;
            println!("{link}");
            Ok(())
        }
        Command::Get { link, output, relays } => {
            let link = Link::parse(&link).context("bad link")?;
            let path = get(&relays, &link, output.as_deref()).await?;
            eprintln!("saved {}", path.display());
            Ok(())
        }
        Command::Status { relay } => status(&relay).await,
        Command::Link { link } => {
            println!("{}", Link::parse(&link)?.manifest);
            Ok(())
        }
    }
}

async fn relay(config: Config) -> anyhow::Result<()> {
    // Both ring and aws-lc-rs are linked; WebRTC needs one chosen before its first handshake.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (key, cert, shared) = node::open(config)?;
    let swarm = node::swarm(key, cert, &shared.config).await?;
    let listener = tokio::net::TcpListener::bind(shared.config.http)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", shared.config.http))?;
    tracing::info!(peer = %shared.peer_id, http = %shared.config.http, data = %shared.config.data_dir.display(), "relay starting");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(http::serve(listener, Arc::clone(&shared), async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));
    let signals = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    node::run(swarm, shared, signals).await?;
    server.await??;
    drop(stop_rx);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Reads the file on a thread of its own, encoding as it goes, and hands stripes over a small
/// channel: encoding overlaps sending, and memory stays at a few stripes.
async fn put(
    relays: &[String],
    path: &Path,
    params: Params,
    over_http: bool,
) -> anyhow::Result<Link> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let client = Client::start(over_http)?;
    let holders = client.connect(relays).await?;
    let key = FileKey::generate()?;
    let mut encoder = Encoder::new(params, &key, FileId::generate()?);
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let shown = path.display().to_string();
    let reader = std::thread::spawn(move || -> anyhow::Result<_> {
        // The file is read straight into each segment's buffer: no copy on the way.
        let read_error = |e| match e {
            codec::Error::Read(e) => anyhow::anyhow!("cannot read {shown}: {e}"),
            e => e.into(),
        };
        while let Some(stripe) = encoder.read(&mut file).map_err(read_error)? {
            if tx.blocking_send(stripe).is_err() {
                bail!("upload stopped");
            }
        }
        let (last, encoded) = encoder.finish()?;
        let _ = tx.blocking_send(last);
        Ok(encoded)
    });
    let bar = progress_bar(size, "uploading");
    let mut upload = Upload::new(client.net()?, holders)?;
    let mut done = 0u64;
    while let Some(stripe) = rx.recv().await {
        done += stripe.shards.iter().take(params.k()).map(|s| s.len() as u64).sum::<u64>();
        upload.send(stripe).await?;
        bar.set_position(done.min(size));
    }
    let encoded = reader.join().map_err(|_| anyhow::anyhow!("encoder thread panicked"))??;
    let mime = String::new();
    let manifest =
        Manifest::create(&encoded, &FileMeta { name, mime }, &key, &client.signing_key()?)?;
    upload.finish(&manifest).await?;
    bar.finish_and_clear();
    Ok(Link { manifest: manifest.id(), key })
}

async fn get(relays: &[String], link: &Link, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let client = Client::start(false)?;
    let mut holders = client.connect(relays).await?;
    let manifest = match fetch_manifest(&client.peer(), &holders, link.manifest).await {
        Ok(manifest) => manifest,
        Err(DownloadError::NotFound { .. }) => {
            for peer in client.providers(link.manifest).await? {
                if !holders.contains(&peer) {
                    holders.push(peer);
                }
            }
            fetch_manifest(&client.peer(), &holders, link.manifest).await?
        }
        Err(e) => return Err(e.into()),
    };
    // Asked when the relays lack some stripe, and as soon as the holders known come to (one
    // vanished, say).
    let (peer, link_manifest) = (client.peer(), link.manifest);
    let more = move || {
        let peer = peer.clone();
        futures::FutureExt::boxed_local(async move {
            peer.providers(link_manifest).await.unwrap_or_default()
        })
    };
    let download = Download::start(client.peer(), holders, &manifest, &link.key, 8).await?;
    let mut download = download.with_more_holders(more);
    download.search_if_short().await;
    let path = output_path(out, &download.info().meta.name);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile_in(dir)?;
    let size = manifest.layout().size();
    let result = write_all(&mut download, tmp.as_file(), tmp.path(), size).await;
    match result {
        Ok(()) => {
            tmp.as_file().sync_all()?;
            tmp.persist(&path).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        }
        Err(e) => Err(e),
    }
}

fn tempfile_in(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".shardweb-")
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))
}

/// Writes the plaintext on a thread of its own, so that writing overlaps fetching, verifying
/// and opening the next segments; two segments wait at most between them. The file at `path`
/// is written past the page cache where the file system allows it (see `direct`).
async fn write_all(
    download: &mut Download<Peer>,
    file: &std::fs::File,
    path: &Path,
    size: u64,
) -> anyhow::Result<()> {
    let mut out = direct::Writer::new(file.try_clone()?, path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        while let Some(segment) = rx.blocking_recv() {
            out.write_all(&segment)?;
        }
        out.finish().map(drop)
    });
    let bar = progress_bar(size, "downloading");
    let mut done = 0u64;
    let fetched = async {
        loop {
            let segment = match download.next_segment().await {
                Ok(Some(segment)) => segment,
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            };
            done += segment.len() as u64;
            // A send fails only when the writer stopped on an error, reported below.
            if tx.send(segment).await.is_err() {
                break;
            }
            bar.set_position(done);
        }
        anyhow::Ok(())
    }
    .await;
    drop(tx);
    let written = writer.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    written.context("cannot write the file")?;
    fetched?;
    bar.finish_and_clear();
    Ok(())
}

async fn status(relay: &str) -> anyhow::Result<()> {
    let info = relay_info(relay).await?;
    let health = http_get(relay, "/api/health").await?;
    let health: serde_json::Value = serde_json::from_str(&health).context("bad health reply")?;
    println!("relay     {relay}");
    println!("peer id   {}", info.peer_id);
    println!("version   {}", info.version);
    println!("status    {}", health["status"].as_str().unwrap_or("unknown"));
    println!("peers     {}", health["peers"]);
    println!("shards    {}", health["shards"]);
    println!("stored    {} of {} bytes", health["bytes_stored"], info.limits.max_storage);
    for addr in &info.addrs {
        println!("address   {addr}");
    }
    Ok(())
}

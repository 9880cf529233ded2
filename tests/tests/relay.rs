//! Relays and the native client as real processes on loopback: put, get, faults, restarts.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use shardweb_relay::client::Client;
use shardweb_tests::{Relay, get, put, random_file, shardweb_in, spawn_shardweb_in, wait_shardweb};

use shardweb_tests::LIMIT;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two relays, the second joined to the first.
fn pair(dir: &Path) -> (Relay, Relay) {
    let a = Relay::start(&dir.join("a"), &[]);
    let b = Relay::start(&dir.join("b"), &["--bootstrap", &a.addr("tcp")]);
    wait_until("the relays to connect", || b.metric("shardweb_peers").unwrap_or(0) >= 1);
    (a, b)
}

#[test]
fn put_through_one_relay_get_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path());
    let file = random_file(dir.path(), "in.bin", 3_000_000, 1);
    let link = put(dir.path(), &file, &[&a], &["--k", "2", "--m", "1"]);
    let got = get(dir.path(), &link, &[&b], "out.bin").expect("get through the other relay");
    assert_eq!(got, fs::read(&file).unwrap());
}

/// The native client opens two TCP connections to a relay (requests spread over both, so a
/// transfer's TLS and yamux work runs on two cores); the relay counts them.
#[test]
fn the_client_opens_two_connections_to_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("r"), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        let client = Client::start(false).unwrap();
        client.connect(&[relay.url()]).await.expect("connect");
        // The relay also listens on QUIC; bulk transfers go over TCP, which costs less CPU.
        let connected = client.peer().connected().await.unwrap();
        let addrs: Vec<String> = connected.iter().map(|(_, a)| a.to_string()).collect();
        assert!(addrs.len() == 1 && addrs[0].contains("/tcp/"), "connected over {addrs:?}");
        client
    });
    // At least two: a dial tries the relay's TCP and QUIC addresses at once, and the relay may
    // count the attempt that lost until it closes.
    wait_until("two connections", || relay.metric("shardweb_connections") >= Some(2));
    assert_eq!(relay.metric("shardweb_peers"), Some(1));
    drop(client);
    wait_until("the connections to close", || relay.metric("shardweb_connections") == Some(0));
}

const HTTP_SHARDS_OK: &str = "shardweb_requests_total{protocol=\"http_shard\",outcome=\"ok\"}";
const LIBP2P_SHARDS_OK: &str = "shardweb_requests_total{protocol=\"shard\",outcome=\"ok\"}";

/// A stand-in for a relay's HTTP that answers `GET /api/info` with `info` (naming the relay's
/// peer id and addresses) and every put with a forged "stored" for one shard, without the
/// relay's receipt; returns its URL and a count of the puts it answered. It serves until the
/// test process ends.
fn info_only(info: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&answered);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut lines = BufReader::new(&stream).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _head: Vec<String> =
                lines.map_while(Result::ok).take_while(|l| !l.is_empty()).collect();
            let mut stream = &stream;
            let _ = if first.starts_with("GET /api/info ") {
                let len = info.len();
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{info}"
                )
            } else {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n";
                stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&[0x81, 0, 1, 0]))
            };
        }
    });
    (url, answered)
}

/// The client puts shards over HTTP to a relay that takes them so (signed, charged to the
/// client's peer id); where HTTP fails, or answers without the relay's receipt, it puts them
/// over libp2p, at once and from then on.
#[test]
fn the_client_puts_over_http_and_over_libp2p_where_http_fails() {
    use shardweb_core::ShardId;
    use shardweb_core::node::Network;
    use shardweb_core::protocol::PutOutcome;

    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("r"), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shard = |text: &str| {
        let bytes = bytes::Bytes::from(text.repeat(1000));
        vec![(ShardId::of(&bytes), bytes)]
    };
    let counts = || (relay.metric(HTTP_SHARDS_OK), relay.metric(LIBP2P_SHARDS_OK));
    runtime.block_on(async {
        let client = Client::start(true).unwrap();
        let peers = client.connect(&[relay.url()]).await.expect("connect");
        let net = client.net().unwrap();
        let put = net.put_shards(&peers[0], shard("over http")).await.unwrap();
        assert_eq!(put, [PutOutcome::Stored]);
        assert_eq!(counts(), (Some(1), Some(0)));

        let info = shardweb_relay::client::http_get(&relay.url(), "/api/info").await.unwrap();
        let (proxy, forged) = info_only(info);
        let client = Client::start(true).unwrap();
        let peers = client.connect(&[proxy]).await.expect("connect through the proxy's info");
        let net = client.net().unwrap();
        let put = net.put_shards(&peers[0], shard("over libp2p")).await.unwrap();
        assert_eq!(put, [PutOutcome::Stored]);
        assert_eq!(forged.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(counts(), (Some(1), Some(1)));
        let put = net.put_shards(&peers[0], shard("again")).await.unwrap();
        assert_eq!(put, [PutOutcome::Stored]);
        assert_eq!(forged.load(std::sync::atomic::Ordering::SeqCst), 1, "HTTP asked again");
        assert_eq!(counts(), (Some(1), Some(2)));
    });
    assert_eq!(relay.metric("shardweb_shards_stored"), Some(3));
}

#[test]
fn a_relay_killed_after_a_put_across_two_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path());
    let file = random_file(dir.path(), "in.bin", 5_000_000, 2);
    // Two holders, four shards a stripe: each holds two, and any two suffice.
    let link = put(dir.path(), &file, &[&a, &b], &["--k", "2", "--m", "2"]);
    a.kill9();
    let got = get(dir.path(), &link, &[&b], "out.bin").expect("get after kill -9");
    assert_eq!(got, fs::read(&file).unwrap());
}

/// `shardweb get link` through the relays at `urls`, killing `victim` (one of them) once it has
/// sent 8 MB of the file; the get must still be running then. Returns the file or the error.
fn get_killing(dir: &Path, link: &str, urls: &str, victim: &mut Relay) -> Result<Vec<u8>, String> {
    let out_before = victim.metric("shardweb_bytes_out_total").unwrap_or(0);
    let mut downloading = spawn_shardweb_in(dir, &["get", link, "-o", "out.bin", "--relay", urls]);
    wait_until("the download to start", || {
        victim.metric("shardweb_bytes_out_total").unwrap_or(0) > out_before + 8_000_000
    });
    victim.kill9();
    assert!(downloading.try_wait().unwrap().is_none(), "the download ended before the kill");
    let out = wait_shardweb(downloading, LIMIT);
    if out.status.success() {
        Ok(fs::read(dir.join("out.bin")).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A file big enough that a transfer on loopback is still going when a relay is killed.
const MID_TRANSFER_BYTES: usize = 200_000_000;

#[test]
fn a_relay_killed_in_the_middle_of_a_put_across_two_leaves_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path());
    let file = random_file(dir.path(), "in.bin", MID_TRANSFER_BYTES, 11);
    let relays = format!("{},{}", a.url(), b.url());
    // Two holders, four shards a stripe: whatever of a stripe `a` took, `b` can take the rest.
    let mut uploading = spawn_shardweb_in(
        dir.path(),
        &["put", file.to_str().unwrap(), "--relay", &relays, "--k", "2", "--m", "2"],
    );
    wait_until("the upload to reach both relays", || {
        a.metric("shardweb_shards_stored").unwrap_or(0) > 8
            && b.metric("shardweb_shards_stored").unwrap_or(0) > 8
    });
    a.kill9();
    assert!(uploading.try_wait().unwrap().is_none(), "the upload ended before the kill");
    let out = wait_shardweb(uploading, LIMIT);
    assert!(out.status.success(), "the put stopped: {}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let got = get(dir.path(), &link, &[&b], "out.bin").expect("get from the relay left");
    assert!(got == fs::read(&file).unwrap(), "the file came back different");
}

#[test]
fn a_relay_killed_in_the_middle_of_a_get_does_not_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path());
    let file = random_file(dir.path(), "in.bin", MID_TRANSFER_BYTES, 12);
    let link = put(dir.path(), &file, &[&a, &b], &["--k", "2", "--m", "2"]);
    let relays = format!("{},{}", a.url(), b.url());
    let got = get_killing(dir.path(), &link, &relays, &mut a).expect("the get goes on");
    assert!(got == fs::read(&file).unwrap(), "the file came back different");
}

/// A relay that stops answering in the middle of a get without closing its connections (a
/// host whose link went quiet) holds the get up for a few hedge waits, not for the request
/// timeout (120 s): the stripes waiting on it get other shards from the other relay.
#[test]
fn a_relay_that_stops_answering_in_the_middle_of_a_get_is_hedged_around() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path());
    let file = random_file(dir.path(), "in.bin", MID_TRANSFER_BYTES, 14);
    // Two holders, four shards a stripe: the shards on `b` alone make every stripe.
    let link = put(dir.path(), &file, &[&a, &b], &["--k", "2", "--m", "2"]);
    let relays = format!("{},{}", a.url(), b.url());
    let out_before = a.metric("shardweb_bytes_out_total").unwrap_or(0);
    let mut downloading =
        spawn_shardweb_in(dir.path(), &["get", &link, "-o", "out.bin", "--relay", &relays]);
    wait_until("the download to start", || {
        a.metric("shardweb_bytes_out_total").unwrap_or(0) > out_before + 8_000_000
    });
    a.pause(true);
    assert!(downloading.try_wait().unwrap().is_none(), "the download ended before the pause");
    // Well under the request timeout, which a get without hedges would wait out.
    let out = wait_shardweb(downloading, Duration::from_secs(60));
    a.pause(false);
    assert!(out.status.success(), "the get failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        fs::read(dir.path().join("out.bin")).unwrap() == fs::read(&file).unwrap(),
        "the file came back different"
    );
}

/// A get whose relays run short of a stripe when one of them is killed finds the rest of the
/// file through the DHT: a third relay, not named to the get, holds a shard of every stripe.
#[test]
fn a_get_short_of_shards_after_a_kill_finds_more_holders_in_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = pair(dir.path());
    let c = Relay::start(&dir.path().join("c"), &["--bootstrap", &a.addr("tcp")]);
    wait_until("the third relay to join", || c.metric("shardweb_peers").unwrap_or(0) >= 1);
    let file = random_file(dir.path(), "in.bin", MID_TRANSFER_BYTES, 13);
    // Three shards a stripe, one on each relay; any two suffice.
    let link = put(dir.path(), &file, &[&a, &b, &c], &["--k", "2", "--m", "1"]);
    let relays = format!("{},{}", a.url(), b.url());
    let got = get_killing(dir.path(), &link, &relays, &mut a)
        .expect("the get goes on with a holder the DHT names");
    assert!(got == fs::read(&file).unwrap(), "the file came back different");
    assert!(
        c.metric("shardweb_bytes_out_total").unwrap_or(0) > 0,
        "nothing came from the third relay"
    );
}

#[test]
fn a_restarted_relay_keeps_its_data_peer_id_and_certhash() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Relay::start(&dir.path().join("a"), &[]);
    let file = random_file(dir.path(), "in.bin", 1_000_000, 3);
    let link = put(dir.path(), &file, &[&a], &["--k", "1", "--m", "1"]);
    let certhash = |r: &Relay| {
        let addr = r.addr("webrtc-direct");
        addr.split("/certhash/").nth(1).unwrap().split('/').next().unwrap().to_owned()
    };
    let (peer, hash) = (a.info().unwrap()["peer_id"].clone(), certhash(&a));
    a.restart();
    assert_eq!(a.info().unwrap()["peer_id"], peer);
    assert_eq!(certhash(&a), hash);
    assert_eq!(get(dir.path(), &link, &[&a], "out.bin").unwrap(), fs::read(&file).unwrap());
}

#[test]
fn kill_9_during_a_put_leaves_no_partial_shard_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Relay::start(&dir.path().join("a"), &[]);
    let first = random_file(dir.path(), "first.bin", 2_000_000, 4);
    let link = put(dir.path(), &first, &[&a], &[]);
    let big = random_file(dir.path(), "big.bin", 60_000_000, 5);
    let url = a.url();
    let mut uploading = std::process::Command::new(shardweb_tests::binary("shardweb"))
        .args(["put", big.to_str().unwrap(), "--relay", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the big upload to start landing", || {
        a.metric("shardweb_shards_stored").unwrap_or(0) > 12
    });
    a.kill9();
    let _ = uploading.wait();
    a.restart();
    // Every shard file left hashes to its name; no temporary file survives.
    let shards = a.data.join("store/shards");
    for sub in fs::read_dir(&shards).unwrap() {
        for file in fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            assert_eq!(blake3::hash(&fs::read(&path).unwrap()).to_hex().as_str(), name);
        }
    }
    assert_eq!(fs::read_dir(a.data.join("store/tmp")).unwrap().count(), 0);
    assert_eq!(get(dir.path(), &link, &[&a], "out.bin").unwrap(), fs::read(&first).unwrap());
}

#[test]
fn over_quota_wrong_key_and_bad_input_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = Relay::start(&dir.path().join("a"), &["--max-storage-per-peer", "1000000"]);
    let big = random_file(dir.path(), "big.bin", 2_000_000, 7);
    let url = a.url();
    let out = shardweb_in(dir.path(), &["put", big.to_str().unwrap(), "--relay", &url], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no space"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(a.metric("shardweb_quota_refusals_total").unwrap() >= 1);

    // The relay keeps serving: a small file goes up and comes back.
    let small = random_file(dir.path(), "small.bin", 10_000, 8);
    let link = put(dir.path(), &small, &[&a], &[]);
    assert_eq!(get(dir.path(), &link, &[&a], "out.bin").unwrap(), fs::read(&small).unwrap());

    let (id, _) = link.split_once('.').unwrap();
    let wrong = format!("{id}.{}", "A".repeat(43));
    let err = get(dir.path(), &wrong, &[&a], "wrong.bin").unwrap_err();
    assert_eq!(err, "shardweb: wrong key for this file\n");
    assert!(!dir.path().join("wrong.bin").exists());

    let err = get(dir.path(), "shardweb:nonsense", &[&a], "x.bin").unwrap_err();
    assert_eq!(
        err,
        "shardweb: bad link: the link has no '.' between its manifest id and its key\n"
    );
    let unknown = format!("shardweb:{}.{}", "A".repeat(43), "A".repeat(43));
    let err = get(dir.path(), &unknown, &[&a], "x.bin").unwrap_err();
    assert!(err.starts_with("shardweb: file not found"), "{err}");

    let out = shardweb_in(dir.path(), &["put", "missing.bin", "--relay", &url], LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("shardweb: cannot open missing.bin"), "{err}");
    // A path that opens but cannot be read (a directory): one line that names it.
    let out = shardweb_in(dir.path(), &["put", ".", "--relay", &url], LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("shardweb: cannot read .: "), "{err}");
    assert_eq!((err.lines().count(), out.status.code()), (1, Some(1)), "{err}");
    let out = shardweb_in(
        dir.path(),
        &["put", small.to_str().unwrap(), "--relay", "http://127.0.0.1:9"],
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("shardweb: cannot reach relay http://127.0.0.1:9"), "{err}");
    assert_eq!(out.status.code(), Some(1));
}

/// A relay's replies over libp2p give their part of its reply budget back once sent: with the
/// smallest budget (one frame, 32 MiB), gets that each move more than it come back whole, one
/// after another.
#[test]
fn replies_over_libp2p_give_the_reply_budget_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    fs::write(&config, "max-reply-mib = 32\n").unwrap();
    let relay = Relay::start(&dir.path().join("relay"), &["--config", config.to_str().unwrap()]);
    let file = random_file(dir.path(), "in.bin", 40_000_000, 7);
    let link = put(dir.path(), &file, &[&relay], &[]);
    let want = fs::read(&file).unwrap();
    for round in 0..3 {
        let got = get(dir.path(), &link, &[&relay], &format!("out{round}.bin")).expect("get");
        assert!(got == want, "round {round}: the bytes differ");
    }
}

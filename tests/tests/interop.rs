//! A client nobody here wrote: js-libp2p, from npm, dials a relay over `/ws`; identify must
//! list the shardweb protocols and ping must answer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shardweb_tests::Relay;

#[test]
fn js_libp2p_identifies_and_pings_a_relay_over_websocket() {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        interop.join("node_modules/libp2p").exists(),
        "js-libp2p is not installed: run `npm ci --prefix tests/interop` (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("a"), &[]);
    let ws = relay.addr("ws");
    let mut child = Command::new("node")
        .arg(interop.join("dial.mjs"))
        .arg(&ws)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the js-libp2p peer did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "js-libp2p failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["peer"], relay.info().unwrap()["peer_id"]);
    assert_eq!(report["agent"], format!("shardweb/{}", env!("CARGO_PKG_VERSION")));
    let protocols: Vec<&str> =
        report["protocols"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    for expected in [
        "/shardweb/shard/1",
        "/shardweb/manifest/1",
        "/ipfs/ping/1.0.0",
        "/libp2p/circuit/relay/0.2.0/hop",
    ] {
        assert!(protocols.contains(&expected), "{expected} missing from {protocols:?}");
    }
    assert!(report["rtt"].as_u64().is_some(), "ping answered");
}

//! The `shardweb` command line as a user meets it: exit codes and one clear line.
//!
//! Being an integration test of this package, it also makes `cargo test` build the real
//! `shardweb` binary, which the process tests in `tests/` run.

use std::process::{Command, Output};

const ID: &str = "lbZ5kCDHh70DHmBhVwYNt6LeFV5_c33Af86o-T2pbn8";
const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE";
/// Runs `shardweb` (these commands touch no network and finish at once).
fn shardweb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardweb"))
        .args(args)
        .env_remove("SHARDWEB_RELAY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run shardweb: {e}"))
}

#[test]
fn a_good_link_prints_its_manifest_id() {
    for link in [format!("shardweb:{ID}.{KEY}"), format!("http://127.0.0.1:8080/#{ID}.{KEY}")] {
        let out = shardweb(&["link", &link]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{ID}\n"));
    }
}

#[test]
fn a_bad_link_is_one_clear_line_and_a_failure() {
    let out = shardweb(&["link", &format!("{ID}.{}", &KEY[..40])]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "shardweb: the link's key is 30 bytes, expected 32\n");
    assert!(out.stdout.is_empty());
}

#[test]
fn version_matches_the_workspace() {
    let out = shardweb(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shardweb {}", env!("CARGO_PKG_VERSION"))
    );
}

//! The `shardweb` command line as a user meets it: exit codes and one clear line.

use std::time::Duration;

use shardweb_tests::shardweb;

const ID: &str = "lbZ5kCDHh70DHmBhVwYNt6LeFV5_c33Af86o-T2pbn8";
const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE";
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn a_good_link_prints_its_manifest_id() {
    for link in [format!("shardweb:{ID}.{KEY}"), format!("http://127.0.0.1:8080/#{ID}.{KEY}")] {
        let out = shardweb(&["link", &link], LIMIT);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{ID}\n"));
    }
}

#[test]
fn a_bad_link_is_one_clear_line_and_a_failure() {
    let out = shardweb(&["link", &format!("{ID}.{}", &KEY[..40])], LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "shardweb: the link's key is 30 bytes, expected 32\n");
    assert!(out.stdout.is_empty());
}

#[test]
fn version_matches_the_workspace() {
    let out = shardweb(&["--version"], LIMIT);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shardweb {}", env!("CARGO_PKG_VERSION"))
    );
}

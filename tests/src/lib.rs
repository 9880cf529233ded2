//! shardweb-tests: end-to-end tests that run shardweb's real binaries as separate processes.
//!
//! The binaries are the ones `cargo build --workspace --bins` leaves in the target directory;
//! the test script builds them before running these tests.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of workspace binary `name` in the same profile as this test build.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from);
    let path = profile_dir.unwrap_or_default().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Runs `shardweb` with `args`, killing it if it outlives `timeout`.
pub fn shardweb(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(binary("shardweb"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start shardweb: {e}"));
    let deadline = Instant::now() + timeout;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardweb {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("cannot read shardweb's output: {e}"))
}

//! The node's persistent identity: its libp2p key and its WebRTC certificate, kept in the
//! data directory so that the peer id and the certhash survive restarts.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p_webrtc::tokio::Certificate;

const KEY_FILE: &str = "identity.key";
const CERT_FILE: &str = "webrtc-cert.pem";

/// Loads the node's Ed25519 key from `dir`, creating it on first start.
pub fn keypair(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        return Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a valid identity key", path.display()));
    }
    let key = Keypair::generate_ed25519();
    write_private(&path, &key.to_protobuf_encoding()?)?;
    Ok(key)
}

/// Loads the WebRTC certificate from `dir`, creating it on first start.
pub fn certificate(dir: &Path) -> anyhow::Result<Certificate> {
    let path = dir.join(CERT_FILE);
    if path.exists() {
        let pem =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a valid certificate", path.display()));
    }
    let cert = Certificate::generate(&mut rand::rng())?;
    write_private(&path, cert.serialize_pem().as_bytes())?;
    Ok(cert)
}

/// Writes a secret file atomically, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

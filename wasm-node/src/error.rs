//! The browser node's errors: one enum, each variant with a stable code that JavaScript sees
//! on the `Error` it receives (`err.code`), so that the page can tell a wrong key from a full
//! store without reading messages.

use shardweb_core::codec;
use shardweb_core::manifest;
use shardweb_core::node::{DownloadError, NetworkError, UploadError};
use wasm_bindgen::JsValue;

/// What can go wrong in the browser node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The link is malformed.
    #[error("bad link: {0}")]
    BadLink(#[from] shardweb_core::link::Error),
    /// Options outside their range (k, m, segment size, relay URLs).
    #[error("invalid options: {reason}")]
    InvalidOptions { reason: String },
    /// No relay could be reached.
    #[error("no relay reachable: {detail}")]
    NoRelays { detail: String },
    /// Nobody reachable has the file.
    #[error("file not found: no relay or peer has manifest {id}")]
    NotFound { id: String },
    /// This browser does not keep the file (to remove it).
    #[error("file not found: this browser keeps no file {id}")]
    NotKept { id: String },
    /// The link's key is not this file's key.
    #[error("wrong key for this file")]
    WrongKey,
    /// Fewer than k good shards of a stripe could be found.
    #[error("not enough shards for stripe {stripe}: found {found} good of the {needed} needed")]
    NotEnoughShards { stripe: u64, found: usize, needed: usize },
    /// Data failed verification: a tampered or corrupt manifest or segment.
    #[error("{detail}")]
    Corrupt { detail: String },
    /// The upload could not be stored by any holder.
    #[error("upload failed: {detail}")]
    UploadFailed { detail: String },
    /// The browser's storage for this site is full (the store's own limit, or the browser's).
    #[error("browser storage is full: {detail}")]
    QuotaExceeded { detail: String },
    /// IndexedDB failed for another reason.
    #[error("browser storage failed: {detail}")]
    Storage { detail: String },
    /// WebCrypto failed (not the authentication of data, which is [`NodeError::Corrupt`]).
    #[error("WebCrypto {op} failed: {detail}")]
    Crypto { op: &'static str, detail: String },
    /// The browser lacks something the node needs.
    #[error("this browser lacks {what}")]
    Unsupported { what: String },
    /// The node was stopped, or the transfer cancelled.
    #[error("{what} was stopped")]
    Stopped { what: &'static str },
    /// The file being uploaded could not be read (it was moved or changed).
    #[error("cannot read the file: {detail}")]
    FileUnreadable { detail: String },
    /// No unfinished transfer has this id (to resume or to cancel).
    #[error("no unfinished transfer {id}")]
    NoSuchTransfer { id: String },
    /// The transfer is running, in this tab or another: it cannot be resumed or cancelled
    /// until it stops.
    #[error("transfer {id} is running {place}")]
    Busy { id: String, place: &'static str },
}

impl NodeError {
    /// The stable code JavaScript sees.
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::BadLink(_) => "BAD_LINK",
            NodeError::InvalidOptions { .. } => "INVALID_OPTIONS",
            NodeError::NoRelays { .. } => "NO_RELAYS",
            NodeError::NotFound { .. } | NodeError::NotKept { .. } => "NOT_FOUND",
            NodeError::WrongKey => "WRONG_KEY",
            NodeError::NotEnoughShards { .. } => "NOT_ENOUGH_SHARDS",
            NodeError::Corrupt { .. } => "CORRUPT",
            NodeError::UploadFailed { .. } => "UPLOAD_FAILED",
            NodeError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            NodeError::Storage { .. } => "STORAGE",
            NodeError::Crypto { .. } => "CRYPTO",
            NodeError::Unsupported { .. } => "UNSUPPORTED",
            NodeError::Stopped { .. } => "STOPPED",
            NodeError::FileUnreadable { .. } => "FILE_UNREADABLE",
            NodeError::NoSuchTransfer { .. } => "NO_SUCH_TRANSFER",
            NodeError::Busy { .. } => "BUSY",
        }
    }

    pub(crate) fn crypto(op: &'static str, e: &JsValue) -> Self {
        NodeError::Crypto { op, detail: describe(e) }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        NodeError::InvalidOptions { reason: reason.into() }
    }

    /// A JavaScript `Error` with this message, `name = "ShardwebError"`, `code`, and for
    /// missing shards the `stripe`, `found` and `needed` numbers.
    pub fn to_js(&self) -> JsValue {
        let error = js_sys::Error::new(&self.to_string());
        error.set_name("ShardwebError");
        let set = |key: &str, value: JsValue| {
            let _ = js_sys::Reflect::set(&error, &key.into(), &value);
        };
        set("code", self.code().into());
        if let NodeError::NotEnoughShards { stripe, found, needed } = self {
            set("stripe", JsValue::from(*stripe as f64));
            set("found", JsValue::from(*found as f64));
            set("needed", JsValue::from(*needed as f64));
        }
        error.into()
    }
}

impl From<NodeError> for JsValue {
    fn from(e: NodeError) -> Self {
        e.to_js()
    }
}

impl From<codec::Error> for NodeError {
    fn from(e: codec::Error) -> Self {
        match e {
            codec::Error::NotEnoughShards { stripe, found, needed } => {
                NodeError::NotEnoughShards { stripe, found, needed }
            }
            codec::Error::InvalidParams { .. } | codec::Error::InvalidSegmentSize { .. } => {
                NodeError::invalid(e.to_string())
            }
            other => NodeError::Corrupt { detail: other.to_string() },
        }
    }
}

impl From<manifest::Error> for NodeError {
    fn from(e: manifest::Error) -> Self {
        match e {
            manifest::Error::WrongKey => NodeError::WrongKey,
            manifest::Error::NameTooLong { .. } | manifest::Error::TypeTooLong { .. } => {
                NodeError::invalid(e.to_string())
            }
            other => NodeError::Corrupt { detail: other.to_string() },
        }
    }
}

impl From<DownloadError> for NodeError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::NotFound { id, .. } => NodeError::NotFound { id: id.to_string() },
            DownloadError::Manifest(e) => e.into(),
            DownloadError::Codec(e) => e.into(),
            other => NodeError::Corrupt { detail: other.to_string() },
        }
    }
}

impl From<UploadError> for NodeError {
    fn from(e: UploadError) -> Self {
        NodeError::UploadFailed { detail: e.to_string() }
    }
}

impl From<NetworkError> for NodeError {
    fn from(e: NetworkError) -> Self {
        NodeError::NoRelays { detail: e.to_string() }
    }
}

/// A short description of a thrown JavaScript value: its message if it is an `Error`.
pub(crate) fn describe(e: &JsValue) -> String {
    if let Some(err) = wasm_bindgen::JsCast::dyn_ref::<js_sys::Error>(e) {
        return format!("{}: {}", String::from(err.name()), String::from(err.message()));
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

//! Share links: a manifest id and a file key, both in the URL fragment.
//!
//! Forms: `<page>#<manifest-id>.<key>` for the web page (the fragment never reaches the page's
//! server) and `shardweb:<manifest-id>.<key>` for native tools. Both parts are 32 bytes in
//! unpadded base64url (43 characters). [`Link::parse`] accepts either form, or the bare
//! fragment, with surrounding whitespace.

use std::fmt;
use std::str::FromStr;

use crate::codec::FileKey;
use crate::manifest::ManifestId;

/// The scheme of the native link form.
pub const SCHEME: &str = "shardweb:";

/// Which half of a link is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The manifest id, before the dot.
    ManifestId,
    /// The file key, after the dot.
    Key,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::ManifestId => "manifest id",
            Part::Key => "key",
        })
    }
}

/// Why a string is not a share link. Never repeats the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing to parse.
    #[error("the link is empty")]
    Empty,
    /// No `.` between the manifest id and the key.
    #[error("the link has no '.' between its manifest id and its key")]
    MissingSeparator,
    /// A part that is not unpadded base64url.
    #[error("the link's {part} is not valid base64url")]
    BadEncoding { part: Part },
    /// A part that decodes to the wrong number of bytes.
    #[error("the link's {part} is {len} bytes, expected 32")]
    BadLength { part: Part, len: usize },
}

/// A share link: which manifest, and the key that opens the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Link {
    /// The manifest's id.
    pub manifest: ManifestId,
    /// The file key.
    pub key: FileKey,
}

impl Link {
    /// Parses any link form: a page URL with the fragment, `shardweb:…`, `#…` or the bare
    /// `<id>.<key>`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let s = input.trim();
        let s = match s.split_once('#') {
            Some((_, fragment)) => fragment,
            None => s.strip_prefix(SCHEME).unwrap_or(s),
        };
        if s.is_empty() {
            return Err(Error::Empty);
        }
        let (id, key) = s.split_once('.').ok_or(Error::MissingSeparator)?;
        let manifest = ManifestId(decode_part(id, Part::ManifestId)?);
        let key = FileKey::from_bytes(decode_part(key, Part::Key)?);
        Ok(Self { manifest, key })
    }

    /// `<manifest-id>.<key>`: what goes after the `#`.
    pub fn fragment(&self) -> String {
        let key = data_encoding::BASE64URL_NOPAD.encode(self.key.as_bytes());
        format!("{}.{key}", self.manifest)
    }

    /// The link for a page at `page` (`http://host:port/`): `page#<manifest-id>.<key>`.
    pub fn to_url(&self, page: &str) -> String {
        let page = page.split_once('#').map_or(page, |(p, _)| p);
        format!("{page}#{}", self.fragment())
    }
}

impl fmt::Display for Link {
    /// The native form, `shardweb:<manifest-id>.<key>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.fragment())
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

impl FromStr for Link {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

pub(crate) fn decode_part(s: &str, part: Part) -> Result<[u8; 32], Error> {
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(s.as_bytes())
        .map_err(|_| Error::BadEncoding { part })?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| Error::BadLength { part, len })
}

//! Extended attributes (POSIX ACLs, file capabilities, security labels,
//! `user.*` and `trusted.*`): reading them from a descriptor, never through
//! a symlink, a canonical encoding and its digest, and setting them on a
//! restore's new file.
//!
//! The canonical encoding is a compact JSON object, names sorted, values as
//! lowercase hex: `{"security.capability":"0100000200200000…","user.a":"31"}`.
//! It is what the baseline store keeps and what its digest is taken over; a
//! live file's digest is computed by streaming the same bytes into the hash,
//! so no bound applies to looking (only to keeping).
use std::{collections::BTreeMap, fs::File, io, path::Path};

use rustix::{
    fs::{
        XattrFlags, fgetxattr, fgetxattr_query, flistxattr, flistxattr_query, fremovexattr,
        fsetxattr,
    },
    io::Errno,
};
use sha2::{Digest as _, Sha256};

use super::{FsError, open_nofollow};

/// How often a list or a value that grew between sizing and reading (the
/// kernel's `ERANGE`) is read again before giving up.
const RETRIES: usize = 4;

/// A file's extended attributes by name (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xattrs {
    entries: BTreeMap<String, Vec<u8>>,
}

/// What reading a file's attributes for keeping found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrRead {
    /// Every attribute, within the bound.
    Recorded(Xattrs),
    /// More than the bound allows, in names and values together.
    TooLarge {
        /// Bytes of names and values.
        bytes: u64,
    },
    /// A name that is not UTF-8, which the store cannot keep.
    NameNotUtf8,
}

/// Why a stored encoding cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum XattrDecodeError {
    /// Not a JSON object of strings.
    #[error("extended attributes are not a JSON object of hex strings")]
    Json(#[from] serde_json::Error),
    /// A value is not hex.
    #[error("extended attribute {0} is not hex")]
    Hex(String),
    /// The content does not have the digest it is kept under.
    #[error("extended attributes do not match their digest")]
    Digest,
}

impl Xattrs {
    /// Attributes from (name, value) pairs.
    pub fn from_pairs<N: Into<String>, V: Into<Vec<u8>>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        Self {
            entries: pairs
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and values, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.get(name).map(Vec::as_slice)
    }

    /// Bytes of names and values together (what the bound counts).
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|(n, v)| (n.len() + v.len()) as u64)
            .sum()
    }

    /// What changed from `self` to `new`, by name: `-name` removed,
    /// `+name` added, `~name` another value; sorted by name.
    pub fn differences(&self, new: &Xattrs) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> =
            self.entries.keys().chain(new.entries.keys()).collect();
        names
            .into_iter()
            .filter_map(
                |name| match (self.entries.get(name), new.entries.get(name)) {
                    (Some(_), None) => Some(format!("-{name}")),
                    (None, Some(_)) => Some(format!("+{name}")),
                    (Some(a), Some(b)) if a != b => Some(format!("~{name}")),
                    _ => None,
                },
            )
            .collect()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            self.entries
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice())),
            |b| out.extend_from_slice(b),
        );
        out
    }

    /// Reads the canonical encoding back.
    pub fn decode(bytes: &[u8]) -> Result<Self, XattrDecodeError> {
        let map: BTreeMap<String, String> = serde_json::from_slice(bytes)?;
        let mut entries = BTreeMap::new();
        for (name, hex) in map {
            let value = unhex(&hex).ok_or_else(|| XattrDecodeError::Hex(name.clone()))?;
            entries.insert(name, value);
        }
        Ok(Self { entries })
    }

    /// SHA-256 of the canonical encoding, as lowercase hex.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        encode(
            self.entries
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice())),
            |b| hasher.update(b),
        );
        hex(&hasher.finalize())
    }
}

/// Writes the canonical encoding of `entries` (sorted by name) to `out`. A
/// name that is not UTF-8 is written lossily followed by a byte no JSON
/// holds, so its digest can never equal that of a stored set.
fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: impl Iterator<Item = (N, V)>,
    mut out: impl FnMut(&[u8]),
) {
    out(b"{");
    for (i, (name, value)) in entries.enumerate() {
        let (name, value) = (name.as_ref(), value.as_ref());
        if i > 0 {
            out(b",");
        }
        let text = String::from_utf8_lossy(name);
        out(serde_json::to_string(&text)
            .expect("strings serialise")
            .as_bytes());
        if std::str::from_utf8(name).is_err() {
            out(&[0xff]);
        }
        out(b":\"");
        for chunk in value.chunks(4096) {
            out(hex(chunk).as_bytes());
        }
        out(b"\"");
    }
    out(b"}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The attribute names of the file open as `fd`, sorted by their bytes.
fn names(fd: &File) -> io::Result<Vec<Vec<u8>>> {
    for _ in 0..RETRIES {
        let size = match flistxattr_query(fd) {
            Ok(n) => n,
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                let mut names: Vec<Vec<u8>> = buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                names.sort();
                return Ok(names);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::RANGE.into())
}

/// The value of `name` on `fd`; `None` when it went away meanwhile.
fn value(fd: &File, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    for _ in 0..RETRIES {
        let size = match fgetxattr_query(fd, name.as_c_str()) {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match fgetxattr(fd, name.as_c_str(), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::RANGE.into())
}

/// Reads the attributes of the file open as `fd` for keeping, up to
/// `limit` bytes of names and values.
pub fn read_fd(fd: &File, limit: u64) -> io::Result<XattrRead> {
    let mut entries = BTreeMap::new();
    let mut bytes = 0u64;
    for name in names(fd)? {
        let Ok(text) = String::from_utf8(name.clone()) else {
            return Ok(XattrRead::NameNotUtf8);
        };
        let Some(value) = value(fd, &name)? else {
            continue;
        };
        bytes += (name.len() + value.len()) as u64;
        if bytes > limit {
            return Ok(XattrRead::TooLarge { bytes });
        }
        entries.insert(text, value);
    }
    Ok(XattrRead::Recorded(Xattrs { entries }))
}

/// Reads the attributes of `path` (not following a final symlink) for
/// keeping, up to `limit` bytes of names and values.
pub fn read(path: &Path, limit: u64) -> Result<XattrRead, FsError> {
    let file = open_nofollow(path)?;
    read_fd(&file, limit).map_err(|source| FsError::Io {
        what: "reading the extended attributes of",
        path: path.display().to_string(),
        source,
    })
}

/// The digest of the attributes of the file open as `fd`, however many
/// there are (each value is read and hashed alone).
pub fn digest_fd(fd: &File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut failed = None;
    // One value at a time (the kernel bounds each at 64 KiB), read as the
    // encoding reaches its name.
    let entries = names(fd)?
        .into_iter()
        .filter_map(|name| match value(fd, &name) {
            Ok(value) => value.map(|v| (name, v)),
            Err(e) => {
                failed.get_or_insert(e);
                None
            }
        });
    encode(entries, |b| hasher.update(b));
    match failed {
        Some(e) => Err(e),
        None => Ok(hex(&hasher.finalize())),
    }
}

/// The digest of the attributes of `path`, not following a final symlink.
pub fn digest(path: &Path) -> Result<String, FsError> {
    let file = open_nofollow(path)?;
    digest_fd(&file).map_err(|source| FsError::Io {
        what: "reading the extended attributes of",
        path: path.display().to_string(),
        source,
    })
}

/// The access ACL, which the kernel keeps in step with the mode's group
/// bits: set after the mode, and the mode checked after it.
pub const ACL_ACCESS: &str = "system.posix_acl_access";

/// Makes the attributes of the new file `fd` exactly `want`: removes what
/// it got at creation (an inherited default ACL, a label) and `want` does
/// not hold, then sets `want`'s. Called after the owner and mode are set:
/// a change of owner clears `security.capability`.
pub fn apply(fd: &File, want: &Xattrs) -> Result<(), (String, io::Error)> {
    let have = names(fd).map_err(|e| (String::from("(list)"), e))?;
    for name in have {
        let keep = std::str::from_utf8(&name).is_ok_and(|n| want.get(n).is_some());
        if !keep {
            let shown = String::from_utf8_lossy(&name).into_owned();
            let cname =
                std::ffi::CString::new(name).map_err(|_| (shown.clone(), Errno::INVAL.into()))?;
            match fremovexattr(fd, cname.as_c_str()) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err((shown, e.into())),
            }
        }
    }
    for (name, value) in want.iter() {
        fsetxattr(fd, name, value, XattrFlags::empty())
            .map_err(|e| (name.to_string(), e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "xattr_tests.rs"]
mod tests;

//! A second view of the watched files, from fanotify: the kernel reports
//! every change to a marked inode whatever path into the kernel made it
//! (a write through io_uring, a descriptor held past the settle time, a
//! shared mapping written back when its last reference goes, a truncate or
//! chmod through `/proc/self/fd/N`), with the writer's process id. The
//! syscall probes say more about a change (which call, which name); this
//! view makes sure none goes unseen.
//!
//! Marks are inode marks on the watched files themselves, so a hard link
//! or any other name for the file is covered too. Events report the file
//! by handle (`FAN_REPORT_FID`); [`FileMarks`] maps handles back to the
//! device and inode the watch list knows.
mod decode;

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
};

pub use decode::{DecodeError, Handle, Notice, decode};
use reflex_wire::FileKey;
use tokio::io::{Interest, unix::AsyncFd};

use crate::fsio;

/// What a mark asks to hear about a directory a watched file lives under:
/// being renamed away or exchanged (`RENAME_EXCHANGE`), or removed.
pub const DIR_MASK: u64 = libc::FAN_MOVE_SELF | libc::FAN_DELETE_SELF | libc::FAN_ONDIR;

/// What a directory is also marked for while a watched path under it has
/// lost its own directory: an entry created or moved in (the missing
/// directory coming back, perhaps someone else's).
pub const ENTRY_MASK: u64 = libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ONDIR;

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Marked {
    /// A watched file.
    File(FileKey),
    /// A directory on the path of watched files.
    Dir(FileKey),
}

/// What a mark asks to hear about a watched file.
pub const MARK_MASK: u64 = libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_MOVE_SELF
    | libc::FAN_DELETE_SELF;

/// Why fanotify is not available or a mark failed.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// `fanotify_init` failed.
    #[error("fanotify_init")]
    Init(#[source] io::Error),
    /// The file could not be opened to be marked.
    #[error("opening {path} to mark it")]
    Open {
        /// The watched path.
        path: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The path names another file than the one the watch list expects.
    #[error("{path} changed before it could be marked")]
    Moved {
        /// The watched path.
        path: String,
    },
    /// `name_to_handle_at` or `fstatfs` failed.
    #[error("reading the file handle of {path}")]
    Handle {
        /// The watched path.
        path: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// `fanotify_mark` failed (ENOSPC: `fs.fanotify.max_user_marks`).
    #[error("fanotify_mark on {path}")]
    Mark {
        /// The watched path.
        path: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The fanotify group and the handles of the files it marks; shared by the
/// watch list (which marks) and the sensor (which reads).
#[derive(Clone)]
pub struct FileMarks {
    inner: Arc<Inner>,
}

struct Inner {
    group: OwnedFd,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_handle: HashMap<Handle, Marked>,
    by_key: HashMap<Marked, Handle>,
}

impl FileMarks {
    /// A new group (`FAN_CLASS_NOTIF | FAN_REPORT_FID`, non-blocking) with
    /// the kernel's bounded queue: an overflow is reported as such.
    pub fn new() -> Result<Self, FanotifyError> {
        let flags =
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_FID;
        // SAFETY: plain syscall; the returned descriptor is checked below.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            return Err(FanotifyError::Init(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        let group = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            inner: Arc::new(Inner {
                group,
                table: Mutex::default(),
            }),
        })
    }

    /// Marks the file at `path`, which must be the file `key`; a file that
    /// is not a regular file is left alone.
    pub fn mark(&self, path: &str, key: FileKey) -> Result<(), FanotifyError> {
        self.add(path, Marked::File(key))
    }

    /// Marks the directory at `path`, which must be `key`, to hear when it
    /// is renamed or removed.
    pub fn mark_dir(&self, path: &str, key: FileKey) -> Result<(), FanotifyError> {
        self.add(path, Marked::Dir(key))
    }

    fn add(&self, path: &str, what: Marked) -> Result<(), FanotifyError> {
        let (key, want, mask) = match what {
            Marked::File(key) => (key, libc::S_IFREG, MARK_MASK),
            Marked::Dir(key) => (key, libc::S_IFDIR, DIR_MASK),
        };
        let file = open_path(path)?;
        let (kind, found) = fstat(&file, path)?;
        if kind != want {
            return Ok(());
        }
        if found != key {
            return Err(FanotifyError::Moved {
                path: path.to_string(),
            });
        }
        let handle = handle_of(&file, path)?;
        mark(&self.inner.group, libc::FAN_MARK_ADD, mask, &file).map_err(|source| {
            FanotifyError::Mark {
                path: path.to_string(),
                source,
            }
        })?;
        let mut table = self.table();
        if let Some(old) = table.by_key.insert(what, handle.clone()) {
            table.by_handle.remove(&old);
        }
        table.by_handle.insert(handle, what);
        Ok(())
    }

    /// Stops hearing about `key`: its mark is removed when `path` still
    /// names it (a replaced or removed file keeps its mark until the kernel
    /// frees the inode; its events then match nothing).
    pub fn unmark(&self, path: &str, what: Marked) {
        let (key, mask) = match what {
            Marked::File(key) => (key, MARK_MASK),
            Marked::Dir(key) => (key, DIR_MASK),
        };
        {
            let mut table = self.table();
            let Some(handle) = table.by_key.remove(&what) else {
                return;
            };
            table.by_handle.remove(&handle);
        }
        if let Ok(file) = open_path(path)
            && fstat(&file, path).is_ok_and(|(_, found)| found == key)
        {
            let _ = mark(&self.inner.group, libc::FAN_MARK_REMOVE, mask, &file);
        }
    }

    /// Adds (`on`) or removes the [`ENTRY_MASK`] events of the marked
    /// directory `key` at `path`.
    pub fn watch_entries(&self, path: &str, key: FileKey, on: bool) -> Result<(), FanotifyError> {
        let file = open_path(path)?;
        let (kind, found) = fstat(&file, path)?;
        if kind != libc::S_IFDIR || found != key {
            return Err(FanotifyError::Moved {
                path: path.to_string(),
            });
        }
        let (op, mask) = match on {
            true => (libc::FAN_MARK_ADD, ENTRY_MASK),
            // FAN_ONDIR stays: the directory's own events still need it.
            false => (libc::FAN_MARK_REMOVE, ENTRY_MASK & !libc::FAN_ONDIR),
        };
        mark(&self.inner.group, op, mask, &file).map_err(|source| FanotifyError::Mark {
            path: path.to_string(),
            source,
        })
    }

    /// The watched file or directory a notice is about.
    pub fn marked(&self, handle: &Handle) -> Option<Marked> {
        self.table().by_handle.get(handle).copied()
    }

    /// Every marked file (to look at them all after a queue overflow).
    pub fn keys(&self) -> Vec<FileKey> {
        self.table()
            .by_key
            .keys()
            .filter_map(|m| match m {
                Marked::File(key) => Some(*key),
                Marked::Dir(_) => None,
            })
            .collect()
    }

    /// How many files and directories are marked.
    pub fn len(&self) -> usize {
        self.table().by_key.len()
    }

    /// Whether no file is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether notices name the process that made the change: the kernel
    /// hides it from a listener without `CAP_SYS_ADMIN`.
    pub fn reports_writers() -> bool {
        const CAP_SYS_ADMIN: u32 = 21;
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
                u64::from_str_radix(hex.trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
    }

    /// A reader of the group's events, registered with tokio.
    pub fn reader(&self) -> io::Result<NoticeReader> {
        // SAFETY: the group descriptor is owned by `Inner`, which the
        // `GroupFd` keeps alive and unchanged for as long as the `AsyncFd`.
        let fd = unsafe {
            AsyncFd::register_with_interest(GroupFd(self.inner.clone()), Interest::READABLE)
        }?;
        Ok(NoticeReader {
            fd,
            buf: vec![0; READ_BUF],
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the maps whole.
        self.inner
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Bytes read per `read(2)`: a few hundred events.
const READ_BUF: usize = 16 * 1024;

struct GroupFd(Arc<Inner>);

impl AsRawFd for GroupFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.group.as_raw_fd()
    }
}

/// Reads the group's events without busy polling.
pub struct NoticeReader {
    fd: AsyncFd<GroupFd>,
    buf: Vec<u8>,
}

impl NoticeReader {
    /// Waits for events and returns those queued now.
    pub async fn read(&mut self) -> io::Result<Result<Vec<Notice>, DecodeError>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let group = guard.get_inner().0.group.as_raw_fd();
            // SAFETY: `buf` is valid for writes of its length; the kernel
            // writes whole events only.
            let read = unsafe { libc::read(group, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if read < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(err);
            }
            return Ok(decode(&self.buf[..read as usize]));
        }
    }
}

/// An `O_PATH` descriptor of `path` itself (a final symlink not followed).
fn open_path(path: &str) -> Result<OwnedFd, FanotifyError> {
    let open_err = |source| FanotifyError::Open {
        path: path.to_string(),
        source,
    };
    let c = CString::new(path).map_err(|e| open_err(io::Error::other(e)))?;
    // SAFETY: `c` is a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(open_err(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The file type (`S_IFMT` bits) of `file`, and its identity.
fn fstat(file: &OwnedFd, path: &str) -> Result<(u32, FileKey), FanotifyError> {
    let stat = nix::sys::stat::fstat(file).map_err(|e| FanotifyError::Open {
        path: path.to_string(),
        source: e.into(),
    })?;
    let key = FileKey {
        dev: fsio::encode_dev(stat.st_dev),
        _pad: 0,
        ino: stat.st_ino,
    };
    Ok((stat.st_mode & libc::S_IFMT, key))
}

/// The handle fanotify will report for the file `file`.
fn handle_of(file: &OwnedFd, path: &str) -> Result<Handle, FanotifyError> {
    let err = |source| FanotifyError::Handle {
        path: path.to_string(),
        source,
    };
    #[repr(C)]
    struct Buf {
        bytes: u32,
        kind: i32,
        data: [u8; decode::MAX_HANDLE_BYTES],
    }
    let mut buf = Buf {
        bytes: decode::MAX_HANDLE_BYTES as u32,
        kind: 0,
        data: [0; decode::MAX_HANDLE_BYTES],
    };
    let mut mount_id = 0;
    // SAFETY: `buf` has the layout of `struct file_handle` followed by
    // `handle_bytes` bytes of room; the empty path with AT_EMPTY_PATH names
    // `file` itself.
    let done = unsafe {
        libc::name_to_handle_at(
            file.as_raw_fd(),
            c"".as_ptr(),
            (&raw mut buf).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if done != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: an all-zero `statfs` is a valid value to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a valid `statfs` to write into.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: `fsid_t` is two ints, as fanotify reports it.
    let fsid: [i32; 2] = unsafe { std::mem::transmute(fs.f_fsid) };
    let len = (buf.bytes as usize).min(decode::MAX_HANDLE_BYTES);
    Ok(Handle {
        fsid,
        kind: buf.kind,
        bytes: buf.data[..len].to_vec(),
    })
}

/// Adds or removes the mark of `file` (`/proc/self/fd/N` names the inode
/// an `O_PATH` descriptor holds; `fanotify_mark` cannot take one directly).
fn mark(group: &OwnedFd, op: libc::c_uint, mask: u64, file: &OwnedFd) -> io::Result<()> {
    let path =
        CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a number");
    // SAFETY: plain syscall on a valid group descriptor and path.
    let done =
        unsafe { libc::fanotify_mark(group.as_raw_fd(), op, mask, libc::AT_FDCWD, path.as_ptr()) };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

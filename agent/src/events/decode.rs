//! The one place kernel bytes become Rust values: lengths checked, kinds
//! validated with `TryFrom`, never a panic on bad input.
use reflex_wire::{
    COMM_LEN, EventHeader, EventKind, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent,
    file::{NAME_MAX, PATH_MAX, flag},
    process::{ARGS_MAX, CLONE_PARENT, EXE_MAX, EXE_PATH_MAX, exec_flag},
};

use super::{
    Body, Event, Exec, Exit, Fork, Task,
    connect::Connect,
    file::{File, FileChange, MatchedBy},
};

/// Why a record could not be decoded. Each is counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the common header.
    #[error("record of {len} bytes is shorter than the {need}-byte header")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The `kind` field names no known event.
    #[error("unknown event kind {0:#06x}")]
    UnknownKind(u32),
    /// A field holds a value no probe sends.
    #[error("{kind:?} record has an invalid {field}: {value}")]
    Field {
        /// Kind from the header.
        kind: EventKind,
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// The record's length does not match its kind's layout.
    #[error("{kind:?} record is {len} bytes, expected {expected}")]
    Size {
        /// Kind from the header.
        kind: EventKind,
        /// Bytes received.
        len: usize,
        /// Bytes the layout has.
        expected: usize,
    },
}

impl DecodeError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Size { .. } => "size_mismatch",
            DecodeError::Field { .. } => "bad_field",
        }
    }
}

/// Wire records that may be read from bytes: plain `#[repr(C)]` data in
/// which every bit pattern is valid.
trait Wire: Copy {}
impl Wire for EventHeader {}
impl Wire for ExecEvent {}
impl Wire for ExitEvent {}
impl Wire for ForkEvent {}
impl Wire for FileEvent {}
impl Wire for NetEvent {}

/// Copies a `T` out of the front of `bytes`, or `None` if too short.
fn read<T: Wire>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes (checked above),
    // `read_unaligned` copes with any alignment, and `T: Wire` types are
    // integers and byte arrays only, for which every bit pattern is valid.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Reads the whole record as `T`, which must be exactly its length.
fn read_exact<T: Wire>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    read(bytes).ok_or(DecodeError::Size {
        kind,
        len: bytes.len(),
        expected: size_of::<T>(),
    })
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes).ok_or(DecodeError::Truncated {
        len: bytes.len(),
        need: size_of::<EventHeader>(),
    })?;
    let kind = EventKind::try_from(header.kind).map_err(|e| DecodeError::UnknownKind(e.0))?;
    let body = match kind {
        EventKind::Exec => {
            let raw: ExecEvent = read_exact(kind, bytes)?;
            let exe_len = (raw.exe_len as usize).min(EXE_MAX);
            let args_len = (raw.args_len as usize).min(ARGS_MAX);
            let path_len = (raw.path_len as usize).min(EXE_PATH_MAX);
            // A cut path names some other file: leave it to the fallback.
            let loaded = (raw.flags & exec_flag::PATH_CUT == 0 && path_len > 0)
                .then(|| lossy(&raw.path[..path_len]));
            Body::Exec(Exec {
                filename: lossy(&raw.exe[..exe_len]),
                argv: split_args(&raw.args[..args_len]),
                argv_truncated: raw.args_truncated != 0,
                dev: raw.file.dev,
                ino: raw.file.ino,
                killed: raw.flags & exec_flag::KILLED != 0,
                loaded,
                ..Exec::default()
            })
        }
        EventKind::Exit => {
            let raw: ExitEvent = read_exact(kind, bytes)?;
            Body::Exit(Exit::from_raw(raw.exit_code))
        }
        EventKind::Fork => {
            let raw: ForkEvent = read_exact(kind, bytes)?;
            Body::Fork(Fork {
                child_pid: raw.child_pid,
                sibling: raw.clone_flags & CLONE_PARENT != 0,
            })
        }
        EventKind::Connect => {
            let raw: NetEvent = read_exact(kind, bytes)?;
            Body::Connect(Connect::from_wire(&raw).ok_or(DecodeError::Field {
                kind,
                field: "direction",
                value: raw.direction as u64,
            })?)
        }
        EventKind::File => {
            let raw: FileEvent = read_exact(kind, bytes)?;
            let change = FileChange::from_wire(raw.change).ok_or(DecodeError::Field {
                kind,
                field: "change",
                value: raw.change as u64,
            })?;
            let text =
                |bytes: &[u8], len: u32, max: usize| lossy(&bytes[..(len as usize).min(max)]);
            Body::File(File {
                path: None,
                change: Some(change),
                changes: vec![change],
                dev: raw.file.dev,
                ino: raw.file.ino,
                dir_dev: raw.dir.dev,
                dir_ino: raw.dir.ino,
                name: text(&raw.name, raw.name_len, NAME_MAX),
                arg_path: text(&raw.path, raw.path_len, PATH_MAX),
                arg_path2: text(&raw.path2, raw.path2_len, PATH_MAX),
                fd: raw.fd,
                open_flags: raw.open_flags,
                matched_by: MatchedBy::from_flags(raw.flags),
                killed: raw.flags & flag::KILLED != 0,
                ..File::default()
            })
        }
    };
    Ok(Event {
        ktime_ns: header.ktime_ns,
        task: task(&header),
        body,
    })
}

fn task(h: &EventHeader) -> Task {
    Task {
        tid: h.pid,
        pid: h.tgid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        comm: lossy(until_nul(&h.comm[..COMM_LEN])),
        cgroup_id: h.cgroup_id,
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(bytes)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(bytes)).into_owned()
}

/// Splits a NUL-separated argument block; a trailing NUL ends the last one.
pub(crate) fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, size: usize) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"sh");
        EventHeader {
            kind,
            size: size as u32,
            ktime_ns: 42,
            pid: 7,
            tgid: 7,
            ppid: 1,
            uid: 0,
            gid: 0,
            _pad: 0,
            cgroup_id: 9,
            comm,
        }
    }

    fn bytes_of<T: Wire>(value: &T) -> Vec<u8> {
        let ptr = (value as *const T).cast::<u8>();
        // SAFETY: test helper reading a plain-data value's own bytes.
        unsafe { std::slice::from_raw_parts(ptr, size_of::<T>()) }.to_vec()
    }

    fn exit_record(code: u32) -> Vec<u8> {
        bytes_of(&ExitEvent {
            header: header(EventKind::Exit as u32, size_of::<ExitEvent>()),
            exit_code: code,
            _pad: 0,
        })
    }

    #[test]
    fn decodes_exit() {
        let event = decode(&exit_record(3 << 8)).unwrap();
        assert_eq!(event.task.comm, "sh");
        assert_eq!(event.task.pid, 7);
        assert_eq!(event.body, Body::Exit(Exit::from_raw(3 << 8)));
    }

    #[test]
    fn decodes_exec_args() {
        let mut raw = ExecEvent {
            header: header(EventKind::Exec as u32, size_of::<ExecEvent>()),
            exe_len: 4,
            args_len: 16,
            args_truncated: 0,
            flags: exec_flag::KILLED,
            file: reflex_wire::FileKey {
                dev: 8 << 20 | 1,
                _pad: 0,
                ino: 77,
            },
            path_len: 13,
            _pad: 0,
            exe: [0; EXE_MAX],
            path: [0; EXE_PATH_MAX],
            args: [0; ARGS_MAX],
        };
        raw.exe[..4].copy_from_slice(b"./sh");
        raw.path[..13].copy_from_slice(b"/usr/bin/dash");
        raw.args[..16].copy_from_slice(b"/bin/sh\0-c\0exit\0");
        let event = decode(&bytes_of(&raw)).unwrap();
        let Body::Exec(exec) = event.body else {
            panic!("not exec")
        };
        assert_eq!(exec.filename, "./sh");
        assert_eq!(exec.loaded.as_deref(), Some("/usr/bin/dash"));
        assert_eq!(
            exec.identity(),
            Some(super::super::FileId {
                dev: 8 << 20 | 1,
                ino: 77
            })
        );
        assert!(exec.killed);
        assert_eq!(exec.argv, ["/bin/sh", "-c", "exit"]);

        raw.flags = exec_flag::PATH_CUT;
        let Body::Exec(exec) = decode(&bytes_of(&raw)).unwrap().body else {
            panic!("not exec")
        };
        assert_eq!(exec.loaded, None, "a cut path is not trusted");
        assert!(!exec.killed);
    }

    #[test]
    fn truncated_record_is_an_error() {
        let err = decode(&[0u8; 10]).unwrap_err();
        assert_eq!(err, DecodeError::Truncated { len: 10, need: 64 });
        assert_eq!(err.reason(), "truncated");
    }

    #[test]
    fn short_payload_is_an_error() {
        let record = exit_record(0);
        let err = decode(&record[..record.len() - 1]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Size {
                expected: 72,
                len: 71,
                ..
            }
        ));
    }

    #[test]
    fn oversized_record_is_an_error() {
        let mut record = exit_record(0);
        record.extend_from_slice(&[0xff; 8]);
        assert!(matches!(
            decode(&record),
            Err(DecodeError::Size { len: 80, .. })
        ));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let record = bytes_of(&header(0xdead, 64));
        assert_eq!(decode(&record), Err(DecodeError::UnknownKind(0xdead)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn splits_args() {
        assert_eq!(split_args(b"a\0b\0"), ["a", "b"]);
        assert_eq!(split_args(b"a\0\0c"), ["a", "", "c"]);
        assert!(split_args(b"").is_empty());
    }
}

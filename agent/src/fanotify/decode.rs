//! The one checked decode point of fanotify's read buffer: event metadata
//! followed by info records, each bounded by the lengths the kernel wrote.

/// `FAN_EVENT_INFO_TYPE_FID`: the identity of the object itself.
const INFO_TYPE_FID: u8 = 1;
/// Size of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// `struct fanotify_event_info_header` + `__kernel_fsid_t`.
const FID_HEADER_LEN: usize = 4 + 8;
/// `struct file_handle` without its bytes.
const HANDLE_HEADER_LEN: usize = 8;
/// Longest handle the kernel hands out (`MAX_HANDLE_SZ`).
pub const MAX_HANDLE_BYTES: usize = 128;

/// The identity of a file as fanotify reports it: filesystem id and file
/// handle, the same bytes `name_to_handle_at` gives for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    /// `f_fsid` of the filesystem.
    pub fsid: [i32; 2],
    /// Handle type.
    pub kind: i32,
    /// Opaque handle bytes.
    pub bytes: Vec<u8>,
}

/// One event read from the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `FAN_*` bits of what happened.
    pub mask: u64,
    /// Thread group id of the process that caused it (0 when the kernel
    /// hides it).
    pub pid: u32,
    /// The object, absent for a queue overflow.
    pub handle: Option<Handle>,
}

/// A buffer that is not what the kernel documents.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An event or record is cut short or claims more than the buffer holds.
    #[error("fanotify record truncated at byte {at}")]
    Truncated {
        /// Offset of the record in the buffer.
        at: usize,
    },
    /// Metadata version this agent does not read.
    #[error("fanotify metadata version {0}, expected {expected}", expected = libc::FANOTIFY_METADATA_VERSION)]
    Version(u8),
}

/// Every event in `buf` (what one `read(2)` returned), in order.
pub fn decode(buf: &[u8]) -> Result<Vec<Notice>, DecodeError> {
    let mut notices = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < METADATA_LEN {
            return Err(DecodeError::Truncated { at });
        }
        let event_len = u32_at(rest, 0) as usize;
        let version = rest[4];
        let metadata_len = u16::from_ne_bytes([rest[6], rest[7]]) as usize;
        if event_len < METADATA_LEN || event_len > rest.len() || metadata_len > event_len {
            return Err(DecodeError::Truncated { at });
        }
        if version != libc::FANOTIFY_METADATA_VERSION {
            return Err(DecodeError::Version(version));
        }
        let mask = u64::from_ne_bytes(rest[8..16].try_into().expect("8 bytes"));
        let pid = u32_at(rest, 20);
        let handle = fid(&rest[metadata_len.max(METADATA_LEN)..event_len])
            .map_err(|off| DecodeError::Truncated { at: at + off })?;
        notices.push(Notice { mask, pid, handle });
        at += event_len;
    }
    Ok(notices)
}

/// The first FID record among `records`; `Err(offset)` for a cut record.
fn fid(mut records: &[u8]) -> Result<Option<Handle>, usize> {
    let mut offset = METADATA_LEN;
    while !records.is_empty() {
        if records.len() < 4 {
            return Err(offset);
        }
        let kind = records[0];
        let len = u16::from_ne_bytes([records[2], records[3]]) as usize;
        if len < 4 || len > records.len() {
            return Err(offset);
        }
        let record = &records[..len];
        if kind == INFO_TYPE_FID {
            if len < FID_HEADER_LEN + HANDLE_HEADER_LEN {
                return Err(offset);
            }
            let fsid = [i32_at(record, 4), i32_at(record, 8)];
            let bytes = u32_at(record, FID_HEADER_LEN) as usize;
            let handle_kind = i32_at(record, FID_HEADER_LEN + 4);
            let start = FID_HEADER_LEN + HANDLE_HEADER_LEN;
            if bytes > MAX_HANDLE_BYTES || start + bytes > len {
                return Err(offset);
            }
            return Ok(Some(Handle {
                fsid,
                kind: handle_kind,
                bytes: record[start..start + bytes].to_vec(),
            }));
        }
        records = &records[len..];
        offset += len;
    }
    Ok(None)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event as the kernel lays it out, with a FID record when `handle`.
    fn event(mask: u64, pid: u32, handle: Option<&[u8]>) -> Vec<u8> {
        let mut info = Vec::new();
        if let Some(h) = handle {
            let len = (FID_HEADER_LEN + HANDLE_HEADER_LEN + h.len()) as u16;
            info.extend([INFO_TYPE_FID, 0]);
            info.extend(len.to_ne_bytes());
            info.extend(7i32.to_ne_bytes());
            info.extend(9i32.to_ne_bytes());
            info.extend((h.len() as u32).to_ne_bytes());
            info.extend(1i32.to_ne_bytes());
            info.extend(h);
        }
        let mut out = Vec::new();
        out.extend(((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        out.extend([libc::FANOTIFY_METADATA_VERSION, 0]);
        out.extend((METADATA_LEN as u16).to_ne_bytes());
        out.extend(mask.to_ne_bytes());
        out.extend((-1i32).to_ne_bytes());
        out.extend(pid.to_ne_bytes());
        out.extend(info);
        out
    }

    #[test]
    fn events_with_and_without_a_handle_decode_in_order() {
        let mut buf = event(libc::FAN_MODIFY, 42, Some(&[1, 2, 3, 4, 5, 6, 7, 8]));
        buf.extend(event(libc::FAN_Q_OVERFLOW, 0, None));
        let notices = decode(&buf).unwrap();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].mask, libc::FAN_MODIFY);
        assert_eq!(notices[0].pid, 42);
        let handle = notices[0].handle.as_ref().unwrap();
        assert_eq!(handle.fsid, [7, 9]);
        assert_eq!(handle.kind, 1);
        assert_eq!(handle.bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(notices[1].handle, None);
    }

    #[test]
    fn a_cut_buffer_is_an_error_not_a_panic() {
        let buf = event(libc::FAN_MODIFY, 42, Some(&[1, 2, 3, 4, 5, 6, 7, 8]));
        for cut in 1..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = buf.clone();
        lying[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(decode(&lying).is_err());
        let mut old = buf;
        old[4] = 2;
        assert_eq!(decode(&old), Err(DecodeError::Version(2)));
    }
}

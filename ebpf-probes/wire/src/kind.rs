//! Stable event kind numbers: one range of 0x100 per family, never reused.

/// What an event record describes; the `u32` value is the wire `kind` field.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A task replaced its image (`sched_process_exec`).
    Exec = 0x0101,
    /// The last thread of a process exited (`sched_process_exit`, group dead).
    Exit = 0x0102,
    /// A task started a new process (`task_newtask` without `CLONE_THREAD`).
    Fork = 0x0103,
    /// A watched file changed.
    File = 0x0201,
    /// A connection was made, accepted, or a socket started listening.
    Connect = 0x0301,
}

/// A `kind` value that names no known event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownKind(pub u32);

impl TryFrom<u32> for EventKind {
    type Error = UnknownKind;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        match value {
            0x0101 => Ok(Self::Exec),
            0x0102 => Ok(Self::Exit),
            0x0103 => Ok(Self::Fork),
            0x0201 => Ok(Self::File),
            0x0301 => Ok(Self::Connect),
            other => Err(UnknownKind(other)),
        }
    }
}

//! Names of the maps in the kernel object, by which the agent's loader finds
//! them. `#[map]` exports a map under its static's name and takes no
//! constant, so the probes check each static against these at compile time
//! (`exported_as!` in `ebpf-probes/src/main.rs`).

/// The ring buffer of the exec family (exec, exit, fork).
pub const EXEC_EVENTS: &str = "EXEC_EVENTS";
/// The ring buffer of the file family.
pub const FILE_EVENTS: &str = "FILE_EVENTS";
/// The ring buffer of the connect family.
pub const CONNECT_EVENTS: &str = "CONNECT_EVENTS";
/// Default bytes of [`EXEC_EVENTS`]; the agent may resize it at load.
pub const EXEC_EVENTS_BYTES: u32 = 4 << 20;
/// Default bytes of [`FILE_EVENTS`]; the agent may resize it at load.
pub const FILE_EVENTS_BYTES: u32 = 4 << 20;
/// Default bytes of [`CONNECT_EVENTS`]; the agent may resize it at load.
pub const CONNECT_EVENTS_BYTES: u32 = 2 << 20;
/// Per-CPU loss counters, indexed by [`crate::loss_slot`].
pub const LOST: &str = "LOST";
/// Per-CPU counters of events a filter kept in the kernel, by
/// [`crate::LossFamily`] index.
pub const FILTERED: &str = "FILTERED";
/// Which connects the agent wants (see [`crate::net::interest`]).
pub const CONNECT_FILTER: &str = "CONNECT_FILTER";
/// IPv4 prefixes some loaded connect policy could match, outbound.
pub const INTEREST4: &str = "INTEREST4";
/// IPv6 prefixes, as [`INTEREST4`].
pub const INTEREST6: &str = "INTEREST6";
/// Local ports wanted of accepted and listening sockets (see
/// [`crate::net::interest::local`]).
pub const LOCAL_PORTS: &str = "LOCAL_PORTS";
/// Tasks whose events are not reported.
pub const EXCLUDED: &str = "EXCLUDED";
/// Watched files by identity.
pub const WATCHED: &str = "WATCHED";
/// Watched directories by identity.
pub const WATCHED_DIRS: &str = "WATCHED_DIRS";
/// Hashes of the last path component of watched files.
pub const WATCHED_NAMES: &str = "WATCHED_NAMES";
/// The open in progress on each CPU.
pub const OPEN_SLOT: &str = "OPEN_SLOT";
/// Descriptors opened for writing on watched files.
pub const WRITE_FDS: &str = "WRITE_FDS";
/// Changes held between syscall entry and exit.
pub const PENDING: &str = "PENDING";
/// Per-CPU room to build a change.
pub const SCRATCH: &str = "SCRATCH";
/// Jump table of the handlers run at syscall entry.
pub const SYS_ENTER: &str = "SYS_ENTER";
/// Jump table of the handlers run at syscall exit.
pub const SYS_EXIT: &str = "SYS_EXIT";
/// IPv4 block rules.
pub const BLOCK4: &str = "BLOCK4";
/// IPv6 block rules.
pub const BLOCK6: &str = "BLOCK6";
/// Datagram flows reported in the last second.
pub const FLOWS: &str = "FLOWS";
/// Executables killed at exec, by identity (device, inode).
pub const EXEC_KILL: &str = "EXEC_KILL";
/// Executables killed at exec, by directory identity and name.
pub const EXEC_KILL_NAMES: &str = "EXEC_KILL_NAMES";
/// Directories with name rules, and the longest name prefix each holds.
pub const EXEC_KILL_DIRS: &str = "EXEC_KILL_DIRS";
/// Per-CPU room for the name of an exec'd file.
pub const NAME_ROOM: &str = "NAME_ROOM";
/// Per-CPU room to build an executable's path.
pub const PATH_ROOM: &str = "PATH_ROOM";
/// Per-CPU dentry names of an executable's path, leaf first.
pub const PATH_PARTS: &str = "PATH_PARTS";
/// CPU samples per process.
pub const CPU_SAMPLES: &str = "CPU_SAMPLES";
/// CPU samples for the host, in [`crate::cpu`] slots.
pub const CPU_HOST: &str = "CPU_HOST";

/// Every map in the object.
pub const ALL: [&str; 30] = [
    EXEC_EVENTS,
    FILE_EVENTS,
    CONNECT_EVENTS,
    LOST,
    FILTERED,
    CONNECT_FILTER,
    INTEREST4,
    INTEREST6,
    LOCAL_PORTS,
    EXCLUDED,
    WATCHED,
    WATCHED_DIRS,
    WATCHED_NAMES,
    OPEN_SLOT,
    WRITE_FDS,
    PENDING,
    SCRATCH,
    SYS_ENTER,
    SYS_EXIT,
    BLOCK4,
    BLOCK6,
    FLOWS,
    EXEC_KILL,
    EXEC_KILL_NAMES,
    EXEC_KILL_DIRS,
    NAME_ROOM,
    PATH_ROOM,
    PATH_PARTS,
    CPU_SAMPLES,
    CPU_HOST,
];

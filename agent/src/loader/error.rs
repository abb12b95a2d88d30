//! Why the probes could not be loaded or attached.
use aya::{EbpfError, maps::MapError, programs::ProgramError};

use super::{btf, tracefs};

/// Why the probes could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Kernel BTF could not give the offsets the probes need.
    #[error("resolving kernel struct offsets")]
    Btf(#[from] btf::BtfError),
    /// tracefs is unusable.
    #[error("preparing tracefs")]
    Tracefs(#[from] tracefs::TracefsError),
    /// The object was rejected as a whole.
    #[error("loading the reflex-probes object")]
    Object(#[source] EbpfError),
    /// A ring buffer size is not a power-of-two multiple of the page size.
    #[error("{family} ring buffer size {bytes} is not a power of two of at least 4096 bytes")]
    RingSize {
        /// The family whose buffer it is.
        family: &'static str,
        /// The size asked for.
        bytes: u32,
    },
    /// The object lacks a program the agent expects (a build mismatch).
    #[error("program {0} missing from the reflex-probes object")]
    MissingProgram(&'static str),
    /// A program failed to load or attach.
    #[error("program {name}: {stage} failed")]
    Program {
        /// Program name.
        name: &'static str,
        /// `load` or `attach`.
        stage: &'static str,
        /// Underlying error.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or of the wrong type.
    #[error("map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Underlying error.
        #[source]
        source: MapError,
    },
    /// The cgroup v2 root could not be opened.
    #[error("opening the cgroup v2 root {path}")]
    Cgroup {
        /// Its path.
        path: std::path::PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The online CPUs could not be listed.
    #[error("listing online CPUs")]
    Cpus(#[source] std::io::Error),
    /// A map was already taken by an earlier call.
    #[error("map {0} missing from the reflex-probes object or already taken")]
    MissingMap(&'static str),
}

/// Maps a program error at `stage` (`load` or `attach`) of program `name`.
pub(super) fn program_error(
    name: &'static str,
    stage: &'static str,
) -> impl Fn(ProgramError) -> LoadError {
    move |source| LoadError::Program {
        name,
        stage,
        source,
    }
}

/// Maps a map error of map `name`.
pub(super) fn map_error(name: &'static str) -> impl Fn(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

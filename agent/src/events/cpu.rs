//! CPU events: a threshold held (`cpu_high`) or released (`cpu_normal`).
use serde::{Deserialize, Serialize};

/// What a CPU threshold is measured over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuScope {
    /// One process, in percent of one core.
    Process,
    /// The whole host, in percent of all cores.
    Host,
}

/// Whether the threshold is crossed or released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuState {
    /// Above the threshold for the whole duration.
    High,
    /// Back below after a `high`.
    Normal,
}

impl CpuState {
    /// The event kind of this state.
    pub fn kind(self) -> super::Kind {
        match self {
            CpuState::High => super::Kind::CpuHigh,
            CpuState::Normal => super::Kind::CpuNormal,
        }
    }
}

/// A CPU threshold event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// The policy whose threshold this is.
    pub policy: String,
    /// Process or host.
    pub scope: CpuScope,
    /// High or normal.
    pub state: CpuState,
    /// The measured value: percent of one core (process) or of all cores (host).
    pub percent: f64,
    /// Host CPU, percent of all cores.
    pub host_percent: f64,
    /// Busiest processes in the interval.
    pub top: Vec<TopProcess>,
}

/// One of the busiest processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopProcess {
    /// Process id.
    pub pid: u32,
    /// Percent of one core.
    pub percent: f64,
    /// Command name.
    pub comm: String,
    /// Executable, when known.
    pub exe: Option<String>,
}

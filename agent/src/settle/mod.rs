//! The settler: the stage between the sensor and the engine. It owns the
//! state that turns raw kernel records into finished events: the file watch
//! list, baselines and settling of file changes, the files exec policies
//! name (by identity), and the CPU counters and thresholds. Everything it
//! emits is final, so `reflex events` prints and `reflex replay` reads
//! exactly what policies see.
//!
//! Records arrive in two lanes and leave in the same two
//! ([`crate::lanes`]): file records, and the exits of their writers, in the
//! file lane, and the rest in the bulk lane. What a file record completes
//! (and drift, and whatever a deadline settles) leaves in the file lane;
//! an exec, exit, connect or CPU event in the bulk lane.
//!
//! Policy sets reach it by a watch channel and leave it in-band in both
//! lanes, ahead of the events judged by them, so the engine swaps each
//! lane's set at the same point of that lane's stream. The one message
//! flowing back is [`Followup`], from actions.
pub mod cpu;
pub mod exec;
pub mod file;
mod run;
#[cfg(test)]
mod run_tests;

use std::{sync::Arc, time::Instant};

use crate::{
    events::{Body, Record},
    exec_kills::NoticeSender,
    lanes::Lane,
    policy::PolicySet,
};
use cpu::CpuSettler;
use exec::ExecWatch;
use file::FileSettler;

/// What the settler passes on, in order.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "events are nearly every message; boxing them would cost an allocation each"
)]
pub enum Settled {
    /// A finished event.
    Event(Record),
    /// The policy set that judges the events after this point.
    Policies(Arc<PolicySet>),
}

/// What actions tell the settler about changes they made.
#[derive(Clone, Debug)]
pub enum Followup {
    /// A revert is about to rename the file `key` over `path`: watch it in
    /// the kernel now, then say so on `ack` (the revert waits, bounded, on
    /// its filesystem worker thread).
    Restoring {
        /// The watched path.
        path: String,
        /// The new file's identity.
        key: reflex_wire::FileKey,
        /// Where the new file is until it is renamed.
        temp: std::path::PathBuf,
        /// Told once the kernel watches `key`.
        ack: std::sync::mpsc::SyncSender<()>,
    },
    /// A revert put a new file (a new inode) at `path`: watch that one.
    Restored {
        /// The watched path.
        path: String,
        /// What the revert left there, as it saw it last.
        state: Option<crate::fsio::FileState>,
    },
    /// A revert of `path` failed: look again later.
    RevertFailed {
        /// The watched path.
        path: String,
        /// What the revert found there afterwards; `None` when it could
        /// not look (its filesystem did not answer).
        seen: Option<Option<crate::fsio::FileState>>,
    },
    /// The kill fuse of a file policy of `set` blew: its kills at open
    /// stop in the kernel too (the engine says so; a reload re-arms).
    KillsOff {
        /// The set the policy belongs to (a newer set has re-armed it).
        set: Arc<PolicySet>,
        /// The policy.
        policy: String,
    },
}

/// The settler's state: files and executables always, CPU when sampling runs.
pub struct Settler {
    files: FileSettler,
    exec: ExecWatch,
    cpu: Option<CpuSettler>,
    set: Arc<PolicySet>,
    /// Marked on every turn (`/healthz`, the watchdog).
    beat: Option<crate::telemetry::alive::Beat>,
}

impl Settler {
    /// A settler for `files` and `cpu`, configured by `set`; returns it
    /// with the drift found while configuring (files changed while no
    /// agent watched them), to be answered first.
    pub fn new(
        files: FileSettler,
        cpu: Option<CpuSettler>,
        set: Arc<PolicySet>,
    ) -> (Self, Vec<Record>) {
        let mut settler = Self {
            files,
            exec: ExecWatch::new(),
            cpu,
            set: Arc::new(PolicySet::default()),
            beat: None,
        };
        let drift = settler.configure(set);
        (settler, drift)
    }

    /// Looks at files on `pool` from now on.
    pub fn with_pool(mut self, pool: crate::fsio::pool::FsPool) -> Self {
        self.files = self.files.with_pool(pool);
        self
    }

    /// The file half.
    pub fn files(&self) -> &FileSettler {
        &self.files
    }

    /// Counts what the exec half loses in `metrics`, and marks the
    /// settler's turns there.
    pub fn with_metrics(mut self, metrics: &crate::telemetry::Metrics) -> Self {
        self.beat = Some(metrics.alive.beat(crate::telemetry::alive::Stage::Settler));
        self.exec
            .count_overflows(metrics.exec_watch_overflows.clone());
        self
    }

    /// Tells `kills` (the exec kill table) which files each kernel-enforced
    /// exec policy covers, now and whenever that changes.
    pub fn with_exec_kills(mut self, kills: NoticeSender) -> Self {
        self.exec.tell(kills);
        self
    }

    /// Takes `set` into use: watches what it covers; returns drift records.
    pub fn configure(&mut self, set: Arc<PolicySet>) -> Vec<Record> {
        self.set = set;
        self.exec.configure(self.set.clone());
        self.files.configure(&self.set)
    }

    /// Takes one record from the sensor's `lane`; returns the finished
    /// event of the bulk lane it is (if any), and the file changes it
    /// settles, in order. A file record is held until it settles; a file
    /// lane exit (its writer's) settles what that process held and goes no
    /// further; any other record is finished as it is (an exit first
    /// settles what that process held open).
    pub fn ingest(
        &mut self,
        lane: Lane,
        mut record: Record,
        now: Instant,
    ) -> (Option<Record>, Vec<Record>) {
        match (lane, &record.body) {
            (_, Body::File(_)) => (None, self.files.ingest(record, now)),
            (Lane::File, Body::Exit(_)) => {
                (None, self.files.process_exited(record.process.pid, now))
            }
            (_, body) => {
                // Not `files.observe`: this lane's time may run ahead of
                // file records still queued.
                let settled = match body {
                    Body::Exit(_) => self.files.process_exited(record.process.pid, now),
                    _ => Vec::new(),
                };
                self.exec.finish(&mut record);
                (Some(record), settled)
            }
        }
    }

    /// Settles what is due at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Record> {
        self.exec.flush(now);
        self.files.expire(now)
    }

    /// When something held must be settled next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.files.next_deadline(), self.exec.flush_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Applies a change an action made.
    pub fn follow(&mut self, followup: Followup) {
        match followup {
            Followup::Restoring {
                path,
                key,
                temp,
                ack,
            } => {
                self.files.expect(&path, key, &temp);
                // The revert may have stopped waiting; nothing to tell then.
                let _ = ack.try_send(());
            }
            Followup::Restored { path, state } => self.files.restored(&path, state),
            Followup::RevertFailed { path, seen } => self.files.revert_failed(&path, seen),
            Followup::KillsOff { set, policy } => {
                if Arc::ptr_eq(&set, &self.set) {
                    self.files.kills_off(&policy);
                }
            }
        }
    }

    /// Reads the CPU counters (when sampling runs) and returns what fires.
    pub fn cpu_tick(&mut self) -> Vec<Record> {
        match self.cpu.as_mut() {
            Some(cpu) => cpu.tick(&self.set),
            None => Vec::new(),
        }
    }
}

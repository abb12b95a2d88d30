//! The sensor, first stage of the pipeline: probes → ring buffers (one per
//! family) → decode → process table → raw [`Record`]s for the settler, in
//! two bounded lanes ([`crate::lanes`]): file records, and the rest.
use std::{collections::HashSet, io, sync::Arc, time::Duration};

use reflex_wire::{LOSS_SLOTS, LossFamily, LossReason, loss_slot};
use tokio::task::JoinHandle;

use crate::identity::Identities;
use crate::{
    events::{Event, Kind, Record, clock::BootClock, decode, reader::FamilyReaders},
    fanotify::{FileMarks, NoticeReader},
    lanes::LaneReceiver,
    loader::{KernelLosses, LoadError, LoadOptions, Probes},
    process::{Lineages, ProcessTable},
    telemetry::{
        Metrics, UNKNOWN_FAMILY,
        alive::{Stage, beat_interval},
    },
};

/// How often the kernel loss counters are copied into the metrics.
const LOSS_POLL: Duration = Duration::from_secs(1);

/// Records buffered between the sensor and the settler by default: a
/// second or so of a heavy burst. Each record carries its process context
/// (up to a few KiB), so this bounds the agent's memory under a flood
/// whatever the consumer's speed; the kernel's ring buffers hold (and
/// count) the rest.
pub const DEFAULT_EVENT_QUEUE: usize = 16_384;

/// Settings for [`Sensor::start`].
#[derive(Clone, Debug)]
pub struct SensorOptions {
    /// Probe loading settings.
    pub load: LoadOptions,
    /// Only emit these kinds; `None` for all.
    pub kinds: Option<HashSet<Kind>>,
    /// Bulk records (exec, exit, connect) buffered between the reader and
    /// the consumer. When full, the reader waits and the kernel ring
    /// buffers absorb (and count) the rest.
    pub queue: usize,
    /// File records buffered between the reader and the consumer, likewise.
    pub file_queue: usize,
    /// Leave out events of this process and everything it starts (its
    /// hooks), in the kernel, so the agent never reacts to itself.
    pub exclude_self: bool,
    /// Ancestors kept per process in its context.
    pub ancestry_depth: usize,
    /// cgroups whose identity is kept.
    pub cgroup_cache: usize,
    /// Also hear about watched files from fanotify (see [`crate::fanotify`]).
    pub fanotify: bool,
    /// Longest an exec-family record waits unread (see
    /// [`FamilyReaders`]).
    pub exec_flush: Duration,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            load: LoadOptions::default(),
            kinds: None,
            queue: DEFAULT_EVENT_QUEUE,
            file_queue: DEFAULT_EVENT_QUEUE,
            exclude_self: true,
            ancestry_depth: crate::process::DEFAULT_ANCESTRY_DEPTH,
            cgroup_cache: crate::identity::DEFAULT_CGROUP_CACHE,
            fanotify: true,
            exec_flush: crate::events::reader::DEFAULT_EXEC_FLUSH,
        }
    }
}

/// Why the sensor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The probes did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A ring buffer could not be registered with the reactor.
    #[error("registering the event ring buffers with tokio")]
    Reactor(#[source] io::Error),
}

/// The identity cache over the cgroup v2 hierarchy; without one, events
/// carry the cgroup id alone.
fn identities(max: usize, metrics: &Metrics) -> Identities {
    let opened = crate::loader::cgroup::root()
        .map(|root| crate::identity::cgroupfs::Cgroupfs::open(&root).map_err(|err| (root, err)));
    match opened {
        Some(Ok(fs)) => Identities::new(Box::new(fs), max).with_metrics(metrics.identity.clone()),
        Some(Err((root, err))) => {
            tracing::warn!(root = %root.display(), %err, "cgroup v2 hierarchy unreadable: events carry no unit or container");
            Identities::default()
        }
        None => {
            tracing::warn!("no cgroup v2 hierarchy: events carry no unit or container");
            Identities::default()
        }
    }
}

/// A running pipeline. Dropping it stops the reader and detaches the probes.
pub struct Sensor {
    probes: Probes,
    marks: Option<FileMarks>,
    losses: Arc<KernelLosses>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sensor {
    /// Loads and attaches the probes, seeds the process table from `/proc`,
    /// and starts reading. Must be called inside a tokio runtime.
    pub fn start(
        options: SensorOptions,
        metrics: Metrics,
    ) -> Result<(Self, LaneReceiver<Record>), SensorError> {
        let mut probes = Probes::load(&options.load)?;
        if options.exclude_self {
            probes.exclude(std::process::id())?;
        }
        let rings = probes.take_events()?;
        let losses = Arc::new(probes.take_losses()?);
        for probe in probes.attached() {
            metrics.probes.with_label_values(&[probe.as_str()]).set(1);
        }
        for (family, _, bytes) in options.load.rings.each() {
            metrics
                .kernel
                .ring_bytes
                .with_label_values(&[family.label()])
                .set(i64::from(bytes));
        }
        let flushes = metrics.kernel.flushes.with_label_values(&["exec"]);
        let readers =
            FamilyReaders::new(rings, options.exec_flush, flushes).map_err(SensorError::Reactor)?;
        let marks = match options.fanotify {
            true => match FileMarks::new() {
                Ok(marks) => {
                    if !FileMarks::reports_writers() {
                        tracing::warn!(
                            "fanotify without CAP_SYS_ADMIN does not name writers: changes only it sees are put back whoever made them, accept_from cannot authorise them"
                        );
                    }
                    Some(marks)
                }
                Err(err) => {
                    tracing::warn!(
                        err = %crate::logging::error_chain(&err),
                        "fanotify unavailable: file changes made through io_uring, held descriptors or shared mappings go unseen"
                    );
                    None
                }
            },
            false => None,
        };
        let notices = match &marks {
            Some(m) => Some(m.reader().map_err(SensorError::Reactor)?),
            None => None,
        };

        // Seed after attaching, so no process can start unseen in between.
        let mut lineages = Lineages::new(options.ancestry_depth);
        lineages.count_truncations(metrics.ancestry_truncated.clone());
        let mut table = ProcessTable::new()
            .with_lineages(lineages)
            .with_identities(identities(options.cgroup_cache, &metrics));
        table.count_truncations(metrics.limits.truncated("argv"));
        table.seed_from_proc();
        metrics.process_table.set(table.len() as i64);

        let (tx, rx) = crate::lanes::channel(options.file_queue, options.queue);
        let router = route::Router::new(tx, metrics.event_queue.clone());
        router.show();
        let pipeline = Pipeline {
            table,
            clock: BootClock::new(),
            kinds: options.kinds,
            metrics: metrics.clone(),
            marks: marks.clone(),
            agent: std::process::id(),
            exited: std::collections::VecDeque::with_capacity(EXITED_KEPT),
        };
        let tasks = vec![
            tokio::spawn(pipeline.run(readers, notices, router)),
            tokio::spawn(sync_kernel_losses(losses.clone(), marks.clone(), metrics)),
        ];
        Ok((
            Self {
                probes,
                marks,
                losses,
                tasks,
            },
            rx,
        ))
    }

    /// The fanotify marks of watched files, when fanotify is in use.
    pub fn file_marks(&self) -> Option<FileMarks> {
        self.marks.clone()
    }

    /// Takes the kernel maps of the file watch list; only the first call succeeds.
    pub fn take_watch_maps(&mut self) -> Result<crate::loader::WatchMaps, LoadError> {
        self.probes.take_watch_maps()
    }

    /// Takes the maps of the in-kernel exec kill; only the first call succeeds.
    pub fn take_exec_kill_maps(
        &mut self,
    ) -> Result<crate::loader::exec_kill::ExecKillMaps, LoadError> {
        self.probes.take_exec_kill_maps()
    }

    /// Takes the connect filter's maps; only the first call succeeds.
    pub fn take_interest_maps(&mut self) -> Result<crate::loader::InterestMaps, LoadError> {
        self.probes.take_interest_maps()
    }

    /// Takes the connect hooks' block rules; only the first call succeeds.
    pub fn take_block_maps(&mut self) -> Result<crate::loader::BlockMaps, LoadError> {
        self.probes.take_block_maps()
    }

    /// The cgroup v2 root the connect hooks are attached to, if any.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.probes.cgroup()
    }

    /// Takes the CPU sample counters; only the first call succeeds.
    pub fn take_cpu_maps(&mut self) -> Result<crate::loader::CpuMaps, LoadError> {
        self.probes.take_cpu_maps()
    }

    /// Hooks that are attached.
    pub fn attached(&self) -> &[String] {
        self.probes.attached()
    }

    /// Events lost in the kernel so far, per reason and family, read now.
    pub fn kernel_losses(&self) -> Result<Vec<(LossReason, LossFamily, u64)>, aya::maps::MapError> {
        self.losses.read()
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Decode and enrichment state owned by the reader task.
struct Pipeline {
    table: ProcessTable,
    clock: BootClock,
    kinds: Option<HashSet<Kind>>,
    metrics: Metrics,
    marks: Option<FileMarks>,
    /// The agent's own pid: its changes, and its hooks', are its own.
    agent: u32,
    /// Processes that exited a moment ago: fanotify reports the last close
    /// of a file after the exit that caused it.
    exited: std::collections::VecDeque<crate::events::ProcessContext>,
}

mod notices;
mod route;

/// Exited processes remembered for fanotify's late notices.
const EXITED_KEPT: usize = 256;

impl Pipeline {
    async fn run(
        mut self,
        mut readers: FamilyReaders,
        mut notices: Option<NoticeReader>,
        mut router: route::Router,
    ) {
        let mut batch = Vec::new();
        let beat = self.metrics.alive.beat(Stage::Sensor);
        let mut idle = beat_interval();
        loop {
            beat.mark();
            let open = router.open();
            let woke = tokio::select! {
                // Held bulk records go first when the bulk lane has room;
                // while it has none, reading goes on (bounded) so that file
                // records are not held behind them.
                biased;
                sent = router.send_held(), if router.holding() => match sent {
                    Ok(()) => continue,
                    Err(route::Closed) => return, // consumer gone: shutting down
                },
                ready = readers.ready(), if open => ready.map(|()| None),
                read = notices::next_notices(&mut notices), if open => Ok(Some(read)),
                _ = idle.tick() => continue,
            };
            if let Err(err) = &woke {
                tracing::error!(%err, "an event ring buffer is unreadable; the sensor stops");
                return;
            }
            // Every family's records of the moment, the exec family first
            // (see `FamilyReaders`); for a fanotify wake-up too, so that the
            // exec of a writer fanotify names is in the table.
            let metrics = self.metrics.clone();
            for event in readers.drain(|bytes| decode_counted(bytes, &metrics)) {
                if let Some(record) = self.handle(event) {
                    batch.push(record);
                }
            }
            if let Ok(Some(read)) = woke {
                match read {
                    Ok(Ok(list)) => {
                        for notice in list {
                            self.notice(notice, &mut batch);
                        }
                    }
                    Ok(Err(err)) => {
                        self.metrics
                            .lost
                            .with_label_values(&["fanotify", "decode", "file"])
                            .inc();
                        tracing::warn!(%err, "dropped an undecodable fanotify read");
                    }
                    Err(err) => {
                        tracing::error!(%err, "fanotify unreadable; only the syscall probes report file changes now");
                        notices = None;
                    }
                }
            }
            for record in batch.drain(..) {
                if router.route(record).await.is_err() {
                    return;
                }
            }
            if router.flush().is_err() {
                return;
            }
        }
    }

    /// Counts and enriches one event; `None` if it is filtered out by kind.
    fn handle(&mut self, event: Event) -> Option<Record> {
        let kind = event.kind();
        self.metrics
            .events
            .with_label_values(&[kind.family(), kind.as_str()])
            .inc();
        let process = self.table.apply(&event);
        if kind == Kind::Exit && self.marks.is_some() {
            if self.exited.len() == EXITED_KEPT {
                self.exited.pop_front();
            }
            self.exited.push_back(process.clone());
        }
        self.metrics.process_table.set(self.table.len() as i64);
        // Forks only keep the table; they are passed on when asked for by name.
        let wanted = match &self.kinds {
            Some(kinds) => kinds.contains(&kind),
            None => kind != Kind::Fork,
        };
        if !wanted {
            return None;
        }
        Some(Record {
            time: humantime::format_rfc3339_nanos(self.clock.to_system_time(event.ktime_ns))
                .to_string(),
            ktime_ns: event.ktime_ns,
            kind,
            process,
            body: event.body,
        })
    }
}

/// Decodes `bytes`, counting a failure under `reflex_events_lost_total{place="decode"}`.
pub fn decode_counted(bytes: &[u8], metrics: &Metrics) -> Option<Event> {
    match decode(bytes) {
        Ok(event) => Some(event),
        Err(err) => {
            metrics
                .lost
                .with_label_values(&["decode", err.reason(), UNKNOWN_FAMILY])
                .inc();
            tracing::warn!(%err, "dropped an undecodable event record");
            None
        }
    }
}

/// Copies the kernel's per-CPU loss and filter counters into the metrics,
/// as deltas.
async fn sync_kernel_losses(losses: Arc<KernelLosses>, marks: Option<FileMarks>, metrics: Metrics) {
    let mut seen = [0u64; LOSS_SLOTS as usize];
    let mut filtered = [0u64; LossFamily::COUNT as usize];
    let mut tick = tokio::time::interval(LOSS_POLL);
    loop {
        tick.tick().await;
        if let Some(marks) = &marks {
            metrics.fanotify_marks.set(marks.len() as i64);
        }
        match losses.read() {
            Ok(now) => {
                for (reason, family, total) in now {
                    let slot = &mut seen[loss_slot(reason, family) as usize];
                    if total > *slot {
                        metrics
                            .lost
                            .with_label_values(&["kernel", reason.label(), family.label()])
                            .inc_by(total - *slot);
                        tracing::warn!(
                            reason = reason.label(),
                            family = family.label(),
                            lost = total - *slot,
                            "kernel dropped events"
                        );
                        *slot = total;
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "reading kernel loss counters"),
        }
        match losses.filtered() {
            Ok(now) => {
                for (family, total) in now {
                    let slot = &mut filtered[family as usize];
                    if total > *slot {
                        metrics
                            .kernel
                            .filtered
                            .with_label_values(&[family.label()])
                            .inc_by(total - *slot);
                        *slot = total;
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "reading kernel filter counters"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_are_counted() {
        let metrics = Metrics::new();
        assert!(decode_counted(&[1, 2, 3], &metrics).is_none());
        let mut unknown = vec![0u8; 64];
        unknown[..4].copy_from_slice(&0xbeefu32.to_ne_bytes());
        assert!(decode_counted(&unknown, &metrics).is_none());
        assert_eq!(metrics.lost_count("decode", "truncated", UNKNOWN_FAMILY), 1);
        assert_eq!(
            metrics.lost_count("decode", "unknown_kind", UNKNOWN_FAMILY),
            1
        );
        assert!(metrics.render().contains("reflex_events_lost_total"));
    }
}

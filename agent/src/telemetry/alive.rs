//! Whether the pipeline's stages still turn: each stage marks its beat on
//! every turn of its loop (and at least once a [`BEAT_PERIOD`] while idle),
//! and a stage whose beat is older than the stall bound is stalled, wedged
//! in one turn or blocked behind a stage that is. `/healthz`, `/readyz`
//! and the service manager's watchdog ask here.
//!
//! A beat is the coarse clock's reading: marking costs two relaxed atomic
//! operations, so stages mark on every event. The clock is advanced by
//! [`Alive::run`] on its own task; a runtime so wedged that it cannot run
//! that task cannot answer `/healthz` or ping the watchdog either.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::{IntGaugeVec, Opts, Registry};

/// How often an idle stage marks its beat, and how often the clock moves.
pub const BEAT_PERIOD: Duration = Duration::from_millis(250);

/// Default time a stage may spend in one turn before it counts as stalled.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(10);

/// The timer an idle stage wakes on to mark its beat: a select arm that
/// fires every [`BEAT_PERIOD`] (a late tick is not made up for).
pub fn beat_interval() -> tokio::time::Interval {
    let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + BEAT_PERIOD, BEAT_PERIOD);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    idle
}

/// The stages of the pipeline, in the order events pass them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reads the ring buffers and fanotify.
    Sensor,
    /// Settles records into events.
    Settler,
    /// Judges events against the policies.
    Engine,
    /// Carries out verdicts.
    Actions,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 4] = [Stage::Sensor, Stage::Settler, Stage::Engine, Stage::Actions];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Sensor => "sensor",
            Stage::Settler => "settler",
            Stage::Engine => "engine",
            Stage::Actions => "actions",
        }
    }
}

struct Inner {
    start: Instant,
    /// Milliseconds since `start`, advanced by [`Alive::run`].
    clock: AtomicU64,
    /// Each stage's last beat on `clock`; `u64::MAX` until it first runs.
    beats: [AtomicU64; 4],
    /// The agent has attached its probes and put its policies in force.
    started: AtomicBool,
    /// Milliseconds a stage may go without a beat.
    stall_after_ms: AtomicU64,
    stalled: IntGaugeVec,
}

/// The stages' beats, shared by the stages and whoever asks.
#[derive(Clone)]
pub struct Alive {
    inner: Arc<Inner>,
}

/// One stage's handle: [`Beat::mark`] on every turn.
#[derive(Clone)]
pub struct Beat {
    inner: Arc<Inner>,
    stage: usize,
}

impl Beat {
    /// The stage turned now.
    pub fn mark(&self) {
        let now = self.inner.clock.load(Ordering::Relaxed);
        self.inner.beats[self.stage].store(now, Ordering::Relaxed);
    }
}

/// What is wrong, if anything: the stages stalled and for how long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Stalled stages and how long since their last beat.
    pub stalled: Vec<(Stage, Duration)>,
}

impl Verdict {
    /// No stage is stalled.
    pub fn is_ok(&self) -> bool {
        self.stalled.is_empty()
    }

    /// `"ok"` or `"stalled: settler (12.3s), ..."`.
    pub fn describe(&self) -> String {
        if self.is_ok() {
            return "ok".into();
        }
        let parts: Vec<String> = self
            .stalled
            .iter()
            .map(|(stage, age)| format!("{} ({:.1}s)", stage.label(), age.as_secs_f64()))
            .collect();
        format!("stalled: {}", parts.join(", "))
    }
}

impl Alive {
    /// Registers `reflex_stage_stalled{stage}` in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let stalled = IntGaugeVec::new(
            Opts::new(
                "reflex_stage_stalled",
                "1 while a pipeline stage has not finished a turn for longer than metrics.stall_after (/healthz fails, watchdog pings stop).",
            ),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stalled.clone()))
            .expect("unique metric names");
        for stage in Stage::ALL {
            stalled.with_label_values(&[stage.label()]).set(0);
        }
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                clock: AtomicU64::new(0),
                beats: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
                started: AtomicBool::new(false),
                stall_after_ms: AtomicU64::new(DEFAULT_STALL_AFTER.as_millis() as u64),
                stalled,
            }),
        }
    }

    /// Judges stages by `stall_after` (at least four beat periods) from now on.
    pub fn set_stall_after(&self, stall_after: Duration) {
        let ms = stall_after.max(BEAT_PERIOD * 4).as_millis() as u64;
        self.inner.stall_after_ms.store(ms, Ordering::Relaxed);
    }

    /// The handle `stage` marks its turns with. Its beat counts from now.
    pub fn beat(&self, stage: Stage) -> Beat {
        let beat = Beat {
            inner: self.inner.clone(),
            stage: stage as usize,
        };
        self.tick();
        beat.mark();
        beat
    }

    /// The agent runs: probes attached, policies in force.
    pub fn started(&self) {
        self.inner.started.store(true, Ordering::Relaxed);
    }

    /// Whether [`Alive::started`] was called.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// The stages stalled now (a stage not yet running is not judged).
    pub fn verdict(&self) -> Verdict {
        let now = self.elapsed_ms();
        let stall_ms = self.inner.stall_after_ms.load(Ordering::Relaxed);
        let mut verdict = Verdict::default();
        for stage in Stage::ALL {
            let beat = self.inner.beats[stage as usize].load(Ordering::Relaxed);
            let age = now.saturating_sub(beat);
            let stalled = beat != u64::MAX && age > stall_ms;
            self.inner
                .stalled
                .with_label_values(&[stage.label()])
                .set(i64::from(stalled));
            if stalled {
                verdict.stalled.push((stage, Duration::from_millis(age)));
            }
        }
        verdict
    }

    /// Advances the clock every [`BEAT_PERIOD`], and pings the service
    /// manager's watchdog (when it has one) while no stage is stalled.
    pub async fn run(self) {
        let watchdog = super::notify::watchdog_period();
        let mut ticker = tokio::time::interval(BEAT_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping: Option<Instant> = None;
        let mut was_ok = true;
        loop {
            ticker.tick().await;
            self.tick();
            let verdict = self.verdict();
            if verdict.is_ok() != was_ok {
                was_ok = verdict.is_ok();
                if was_ok {
                    tracing::info!("every stage turns again");
                } else {
                    tracing::error!(
                        what = verdict.describe(),
                        "a stage is stalled: /healthz fails and the watchdog is no longer pinged"
                    );
                }
            }
            if let Some(period) = watchdog
                && verdict.is_ok()
                && last_ping.is_none_or(|at| at.elapsed() >= period)
            {
                super::notify::watchdog();
                last_ping = Some(Instant::now());
            }
        }
    }

    fn tick(&self) {
        self.inner.clock.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        self.inner.start.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_stops_marking_is_stalled_and_recovers_when_it_marks() {
        let alive = Alive::register(&Registry::new());
        alive.set_stall_after(Duration::from_secs(1));
        let engine = alive.beat(Stage::Engine);
        let settler = alive.beat(Stage::Settler);
        assert!(alive.verdict().is_ok());
        std::thread::sleep(Duration::from_millis(1200));
        alive.tick();
        settler.mark();
        let verdict = alive.verdict();
        assert_eq!(verdict.stalled.len(), 1, "{verdict:?}");
        assert_eq!(verdict.stalled[0].0, Stage::Engine);
        assert!(verdict.describe().starts_with("stalled: engine ("));
        assert_eq!(alive.inner.stalled.with_label_values(&["engine"]).get(), 1);
        engine.mark();
        assert!(alive.verdict().is_ok());
        assert_eq!(alive.verdict().describe(), "ok");
    }

    #[test]
    fn a_stage_not_yet_running_is_not_judged() {
        let alive = Alive::register(&Registry::new());
        alive.set_stall_after(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1100));
        alive.tick();
        assert!(alive.verdict().is_ok());
    }
}

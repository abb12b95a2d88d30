//! Metrics of the file watch list's kernel maps: how full they are, and
//! the files they had no room for.
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The `map` label of each kernel watch map.
pub const WATCH_MAPS: [&str; 3] = ["files", "dirs", "names"];

/// Why a file could not be put in a kernel watch map.
pub const REFUSALS: [&str; 2] = ["map_full", "error"];

/// The watch-map metrics.
#[derive(Clone)]
pub struct WatchMetrics {
    /// `reflex_watch_map_entries{map}`: entries in use.
    pub entries: IntGaugeVec,
    /// `reflex_watch_map_capacity{map}`: entries the map was made with.
    pub capacity: IntGaugeVec,
    /// `reflex_watch_refused_total{reason}`: entries the kernel refused
    /// (`map_full`, or another `error`); those files are watched by
    /// fanotify and the directory probe only.
    pub refused: IntCounterVec,
    /// `reflex_watch_scan_entries_total`: entries looks through watched
    /// directories went through (their cost, linear in what appears).
    pub scan_entries: IntCounter,
    /// `reflex_watch_scan_cut_total{stage}`: looks (`growth`) and walks at
    /// start or reload (`start`) stopped at `watch.max_scan` covered files;
    /// a look continues in the next round.
    pub scans_cut: IntCounterVec,
    /// `reflex_watch_scan_backlog`: directories waiting for their look.
    pub scan_backlog: IntGauge,
}

/// The `stage` label of `reflex_watch_scan_cut_total`.
pub const SCAN_STAGES: [&str; 2] = ["start", "growth"];

impl WatchMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let gauges = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["map"]).expect("valid metric")
        };
        let this = Self {
            entries: gauges(
                "reflex_watch_map_entries",
                "Entries in use in the kernel's file watch maps (files: WATCHED, dirs: WATCHED_DIRS, names: WATCHED_NAMES).",
            ),
            capacity: gauges(
                "reflex_watch_map_capacity",
                "Entries each kernel file watch map was made with at start (from the policy set, at most watch.max_files / watch.max_dirs).",
            ),
            refused: IntCounterVec::new(
                Opts::new(
                    "reflex_watch_refused_total",
                    "Watch-map entries the kernel refused (map_full: past the map's capacity; error: any other); such files are watched by fanotify and their directory only, without kill at open.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            scan_entries: IntCounter::new(
                "reflex_watch_scan_entries_total",
                "Directory entries and watched paths the looks through watched directories went through (one look per batch of new-entry notices).",
            )
            .expect("valid metric"),
            scans_cut: IntCounterVec::new(
                Opts::new(
                    "reflex_watch_scan_cut_total",
                    "Looks through a watched directory (growth) and glob walks at start or reload (start) stopped at watch.max_scan covered files; a look continues in the next round, a walk leaves the rest to the next look at their directory.",
                ),
                &["stage"],
            )
            .expect("valid metric"),
            scan_backlog: IntGauge::new(
                "reflex_watch_scan_backlog",
                "Watched directories waiting for a look after new entries appeared in them.",
            )
            .expect("valid metric"),
        };
        for map in WATCH_MAPS {
            this.entries.with_label_values(&[map]);
            this.capacity.with_label_values(&[map]);
        }
        for reason in REFUSALS {
            this.refused.with_label_values(&[reason]);
        }
        for stage in SCAN_STAGES {
            this.scans_cut.with_label_values(&[stage]);
        }
        for collector in [
            Box::new(this.entries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.capacity.clone()),
            Box::new(this.refused.clone()),
            Box::new(this.scan_entries.clone()),
            Box::new(this.scans_cut.clone()),
            Box::new(this.scan_backlog.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        this
    }
}

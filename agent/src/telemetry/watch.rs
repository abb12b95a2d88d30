//! Metrics of the file watch list's kernel maps: how full they are, and
//! the files they had no room for.
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

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
}

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
        };
        for map in WATCH_MAPS {
            this.entries.with_label_values(&[map]);
            this.capacity.with_label_values(&[map]);
        }
        for reason in REFUSALS {
            this.refused.with_label_values(&[reason]);
        }
        for collector in [
            Box::new(this.entries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.capacity.clone()),
            Box::new(this.refused.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        this
    }
}

//! Who a process is in the words operators use: its cgroup v2 path, and
//! from it the systemd unit and the container. The kernel sends a cgroup
//! id with every record; the path is resolved once per cgroup (by handle,
//! on the cgroup v2 hierarchy), kept in a bounded cache, and what the path
//! says is parsed from the names each runtime gives its cgroups (`path`).
pub mod cgroupfs;
pub mod path;

use std::{collections::HashMap, sync::Arc};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

/// Default of `process.cgroup_cache`: cgroups whose identity is kept.
pub const DEFAULT_CGROUP_CACHE: usize = 4096;

/// Where a process runs, as its events show it (flattened into
/// `process`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// cgroup v2 path below the hierarchy's root (`/` for the root).
    pub cgroup: String,
    /// The systemd unit the cgroup belongs to (`nginx.service`,
    /// `session-3.scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The unit of a user's service manager (`systemctl --user`), below
    /// `user@UID.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_unit: Option<String>,
    /// The container, when the path is one a runtime makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

impl Identity {
    /// What `path` (below the hierarchy's root) says.
    pub fn from_path(path: &str) -> Self {
        Self {
            cgroup: path.to_owned(),
            unit: path::unit(path),
            user_unit: path::user_unit(path),
            container: path::container(path),
        }
    }
}

/// A container, by the runtime's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The runtime's id (64 hex digits; the machine name for nspawn).
    pub id: String,
    /// The runtime whose cgroup naming it follows.
    pub runtime: Runtime,
    /// Its name, where the runtime's local state says it cheaply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its image, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Container runtimes by their cgroup naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Docker (`docker-ID.scope`, `docker/ID`).
    Docker,
    /// containerd's CRI plugin (`cri-containerd-ID.scope`).
    Containerd,
    /// CRI-O (`crio-ID.scope`).
    CriO,
    /// A Kubernetes runtime with the cgroupfs driver (`kubepods/…/ID`),
    /// which does not say which.
    Cri,
    /// Podman (`libpod-ID.scope`).
    Podman,
    /// systemd-nspawn or another machined machine (`machine.slice`).
    Nspawn,
}

/// Why a cgroup's path is not known.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The cgroup was removed before it was resolved.
    #[error("cgroup {0} is gone")]
    Gone(u64),
    /// The hierarchy would not say.
    #[error("cgroup {id}: {source}")]
    Failed {
        /// The cgroup id.
        id: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// A cgroup v2 hierarchy that turns ids into paths.
pub trait Hierarchy: Send + std::fmt::Debug {
    /// The path of cgroup `id` below the root.
    fn path_of(&self, id: u64) -> Result<String, ResolveError>;
    /// Whether cgroup `id` still exists.
    fn exists(&self, id: u64) -> bool;
    /// The id and path of the cgroup `pid` runs in.
    fn of_pid(&self, pid: u32) -> Option<(u64, String)>;
    /// Adds what the runtime's local state says of `container`.
    fn describe(&self, _container: &mut Container) {}
}

/// The identity cache's metrics.
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    /// `reflex_cgroup_cache_entries`.
    pub entries: IntGauge,
    /// `reflex_cgroup_resolves_total{result}`: cache misses resolved
    /// synchronously (`resolved`), or not (`gone`, `failed`).
    pub resolves: IntCounterVec,
    /// `reflex_cgroup_cache_evictions_total{reason}`: `gone` (the cgroup
    /// was removed), `full` (dropped at `process.cgroup_cache`).
    pub evictions: IntCounterVec,
}

impl IdentityMetrics {
    /// Creates the metrics, registers them, and shows every label at 0.
    pub fn register(registry: &Registry) -> Self {
        let entries = IntGauge::new(
            "reflex_cgroup_cache_entries",
            "cgroups whose identity (path, unit, container) the agent keeps.",
        )
        .expect("valid metric");
        let resolves = IntCounterVec::new(
            Opts::new(
                "reflex_cgroup_resolves_total",
                "cgroup ids not in the identity cache, resolved on the event that brought them: resolved, gone, failed.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let evictions = IntCounterVec::new(
            Opts::new(
                "reflex_cgroup_cache_evictions_total",
                "Identity cache entries dropped: gone (cgroup removed), full (past process.cgroup_cache).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for result in ["resolved", "gone", "failed"] {
            resolves.with_label_values(&[result]);
        }
        for reason in ["gone", "full"] {
            evictions.with_label_values(&[reason]);
        }
        for c in [
            Box::new(entries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(resolves.clone()),
            Box::new(evictions.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            entries,
            resolves,
            evictions,
        }
    }
}

/// cgroup id → identity, bounded; without a hierarchy every lookup is
/// `None` (replay, unit tests).
#[derive(Debug, Default)]
pub struct Identities {
    hierarchy: Option<Box<dyn Hierarchy>>,
    /// `None` remembers a cgroup that could not be resolved, so it costs
    /// one attempt, not one per event.
    cache: HashMap<u64, Option<Arc<Identity>>>,
    max: usize,
    metrics: Option<IdentityMetrics>,
}

impl Identities {
    /// A cache of at most `max` cgroups over `hierarchy`.
    pub fn new(hierarchy: Box<dyn Hierarchy>, max: usize) -> Self {
        Self {
            hierarchy: Some(hierarchy),
            cache: HashMap::new(),
            max: max.max(1),
            metrics: None,
        }
    }

    /// Counts in `metrics`.
    pub fn with_metrics(mut self, metrics: IdentityMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// cgroups held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The identity of cgroup `id`, resolved now on a miss so that the
    /// first event of a new cgroup carries it. Ids are never reused, so an
    /// entry is never wrong, only perhaps no longer needed.
    pub fn of(&mut self, id: u64) -> Option<Arc<Identity>> {
        if id == 0 {
            return None;
        }
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        let hierarchy = self.hierarchy.as_ref()?;
        let found = match hierarchy.path_of(id) {
            Ok(path) => {
                self.count("resolved");
                Some(self.describe(&path))
            }
            Err(ResolveError::Gone(_)) => {
                self.count("gone");
                None
            }
            Err(err) => {
                self.count("failed");
                tracing::debug!(%err, "cgroup not resolved");
                None
            }
        };
        self.insert(id, found.clone());
        found
    }

    /// The cgroup id and identity of a running process (for the contexts
    /// not built from a kernel record), from `/proc`.
    pub fn of_pid(&mut self, pid: u32) -> (u64, Option<Arc<Identity>>) {
        let Some((id, path)) = self.hierarchy.as_ref().and_then(|h| h.of_pid(pid)) else {
            return (0, None);
        };
        if let Some(known) = self.cache.get(&id) {
            return (id, known.clone());
        }
        self.count("resolved");
        let found = Some(self.describe(&path));
        self.insert(id, found.clone());
        (id, found)
    }

    fn describe(&self, path: &str) -> Arc<Identity> {
        let mut identity = Identity::from_path(path);
        if let (Some(container), Some(hierarchy)) = (&mut identity.container, &self.hierarchy) {
            hierarchy.describe(container);
        }
        Arc::new(identity)
    }

    fn count(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.resolves.with_label_values(&[result]).inc();
        }
    }

    /// Keeps `found`; at the bound, first drops the cgroups that are gone,
    /// then, if that freed less than a quarter, everything (re-resolved as
    /// events need them). A sweep costs a syscall per entry, so each one
    /// must make room for a quarter of the bound: otherwise a user who
    /// churns cgroups past a nearly full cache pays one sweep per exec.
    fn insert(&mut self, id: u64, found: Option<Arc<Identity>>) {
        if self.cache.len() >= self.max {
            let before = self.cache.len();
            if let Some(h) = &self.hierarchy {
                self.cache.retain(|&id, _| h.exists(id));
            }
            let gone = before - self.cache.len();
            let full = if self.cache.len() > self.max - self.max / 4 {
                let n = self.cache.len();
                self.cache.clear();
                n
            } else {
                0
            };
            if let Some(m) = &self.metrics {
                m.evictions.with_label_values(&["gone"]).inc_by(gone as u64);
                m.evictions.with_label_values(&["full"]).inc_by(full as u64);
            }
        }
        self.cache.insert(id, found);
        if let Some(m) = &self.metrics {
            m.entries.set(self.cache.len() as i64);
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod cache_tests;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use super::*;

/// A hierarchy whose cgroups the test adds and removes, counting lookups.
#[derive(Debug, Default, Clone)]
struct Fake {
    paths: Arc<Mutex<HashMap<u64, String>>>,
    lookups: Arc<AtomicUsize>,
}

impl Hierarchy for Fake {
    fn path_of(&self, id: u64) -> Result<String, ResolveError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.paths
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or(ResolveError::Gone(id))
    }
    fn exists(&self, id: u64) -> bool {
        self.paths.lock().unwrap().contains_key(&id)
    }
    fn of_pid(&self, _pid: u32) -> Option<(u64, String)> {
        None
    }
}

fn metrics() -> IdentityMetrics {
    IdentityMetrics::register(&Registry::new())
}

#[test]
fn resolved_once_per_cgroup() {
    let fake = Fake::default();
    fake.paths
        .lock()
        .unwrap()
        .insert(7, "/system.slice/nginx.service".into());
    let m = metrics();
    let mut ids = Identities::new(Box::new(fake.clone()), 16).with_metrics(m.clone());
    let first = ids.of(7).expect("resolved");
    assert_eq!(first.unit.as_deref(), Some("nginx.service"));
    assert_eq!(ids.of(7), Some(first));
    assert_eq!(fake.lookups.load(Ordering::SeqCst), 1);
    assert_eq!(m.resolves.with_label_values(&["resolved"]).get(), 1);
    // A cgroup gone before its first event is tried once.
    assert_eq!(ids.of(8), None);
    assert_eq!(ids.of(8), None);
    assert_eq!(fake.lookups.load(Ordering::SeqCst), 2);
    assert_eq!(m.resolves.with_label_values(&["gone"]).get(), 1);
    assert_eq!(ids.of(0), None, "no cgroup id, nothing to resolve");
    assert_eq!(m.entries.get(), 2);
}

#[test]
fn bounded_gone_cgroups_first() {
    let fake = Fake::default();
    for id in 1..=4 {
        fake.paths.lock().unwrap().insert(id, format!("/c{id}"));
    }
    let m = metrics();
    let mut ids = Identities::new(Box::new(fake.clone()), 4).with_metrics(m.clone());
    for id in 1..=4 {
        ids.of(id).expect("resolved");
    }
    // Two cgroups go away; the fifth takes the room they held.
    fake.paths.lock().unwrap().retain(|&id, _| id > 2);
    fake.paths.lock().unwrap().insert(5, "/c5".into());
    ids.of(5).expect("resolved");
    assert_eq!(ids.len(), 3);
    assert_eq!(m.evictions.with_label_values(&["gone"]).get(), 2);
    assert_eq!(m.evictions.with_label_values(&["full"]).get(), 0);
    // All live and full: the cache starts over rather than grow.
    fake.paths.lock().unwrap().insert(6, "/c6".into());
    ids.of(6).expect("resolved");
    fake.paths.lock().unwrap().insert(7, "/c7".into());
    ids.of(7).expect("resolved");
    assert!(ids.len() <= 4, "{} entries", ids.len());
    assert_eq!(m.evictions.with_label_values(&["full"]).get(), 4);
    assert_eq!(ids.of(3).map(|i| i.cgroup.clone()).as_deref(), Some("/c3"));
}

#[test]
fn a_sweep_that_frees_little_starts_over() {
    let fake = Fake::default();
    for id in 1..=8 {
        fake.paths.lock().unwrap().insert(id, format!("/c{id}"));
    }
    let m = metrics();
    let mut ids = Identities::new(Box::new(fake.clone()), 8).with_metrics(m.clone());
    for id in 1..=8 {
        ids.of(id).expect("resolved");
    }
    // One of eight gone: sweeping for it at every new cgroup would cost a
    // syscall per entry per exec, so the cache starts over instead.
    fake.paths.lock().unwrap().retain(|&id, _| id != 1);
    fake.paths.lock().unwrap().insert(9, "/c9".into());
    ids.of(9).expect("resolved");
    assert_eq!(m.evictions.with_label_values(&["gone"]).get(), 1);
    assert_eq!(m.evictions.with_label_values(&["full"]).get(), 7);
    assert_eq!(ids.len(), 1);
}

#[test]
fn detached_knows_nothing() {
    let mut ids = Identities::default();
    assert_eq!(ids.of(1), None);
    assert_eq!(ids.of_pid(1), (0, None));
}

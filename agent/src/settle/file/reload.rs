//! Taking a reloaded policy set into use without waiting on a filesystem:
//! each path and glob it covers is walked, looked at and compared with its
//! baselines on the filesystem pool ([`Walk`]), and the set is taken into
//! use (watched, drift answered) once every one has answered or timed out.
//! Until then the running set stays in force, and a newer set replaces
//! the one in waiting. At start the same is done inline, before the agent
//! says it runs.
use std::{collections::HashMap, sync::Arc, time::Instant};

use super::{
    FileSettler,
    intake::FsDone,
    watch::{Walk, WalkJob},
};
use crate::{
    events::Record,
    fsio::pool::{JobKey, PoolError},
    policy::PolicySet,
};

/// A set waiting for the pool's walks.
pub(super) struct Reload {
    generation: u64,
    set: Arc<PolicySet>,
    waiting: usize,
    walks: HashMap<String, Walk>,
}

impl FileSettler {
    /// Starts taking `set` into use: returns its drift records when that
    /// is done at once (no pool, or nothing to walk); otherwise the walks
    /// run on the pool and [`FileSettler::reloaded`] says when it is done.
    pub fn begin_reload(&mut self, set: Arc<PolicySet>) -> Option<Vec<Record>> {
        let Some(looker) = &self.looker else {
            return Some(self.configure(&set));
        };
        let (pool, tx) = (looker.pool.clone(), looker.tx.clone());
        let jobs = self.walk_jobs(&set);
        if jobs.is_empty() {
            self.reload = None;
            return Some(self.configure_with(&set, &HashMap::new()));
        }
        self.generation += 1;
        let generation = self.generation;
        self.reload = Some(Reload {
            generation,
            set,
            waiting: jobs.len(),
            walks: HashMap::new(),
        });
        for job in jobs {
            let glob = job.glob.as_str().to_string();
            let key = JobKey {
                path: job_path(&job),
                dev: 0,
            };
            let tx = tx.clone();
            pool.submit(
                key,
                "watch",
                move || Walk::run(job),
                move |result| {
                    let _ = tx.send(FsDone::Walk {
                        generation,
                        glob,
                        result,
                    });
                },
            );
        }
        None
    }

    /// The set a reload took into use since last asked, once.
    pub fn reloaded(&mut self) -> Option<Arc<PolicySet>> {
        self.reloaded.take()
    }

    /// Keeps what the pool found for `glob`; takes the set into use when
    /// it was the last, returning its drift records.
    pub(super) fn walk_done(
        &mut self,
        generation: u64,
        glob: String,
        result: Result<Walk, PoolError>,
        now: Instant,
    ) -> Vec<Record> {
        let Some(reload) = self.reload.as_mut().filter(|r| r.generation == generation) else {
            // A newer set replaced it.
            return self.expire(now);
        };
        match result {
            Ok(walk) => {
                reload.walks.insert(glob, walk);
            }
            Err(err) => tracing::debug!(glob, error = %err, "walking a policy path"),
        }
        reload.waiting -= 1;
        if reload.waiting > 0 {
            return self.expire(now);
        }
        let Some(Reload { set, walks, .. }) = self.reload.take() else {
            return Vec::new();
        };
        let mut out = self.configure_with(&set, &walks);
        self.reloaded = Some(set);
        out.extend(self.expire(now));
        out
    }
}

/// What a walk works on, for the pool's one-job-per-file rule and its
/// stuck accounting: the directory a glob walks, or the literal path.
fn job_path(job: &WalkJob) -> String {
    match job.glob.is_literal() {
        true => job.glob.as_str().to_string(),
        false => job.glob.literal_dir().to_string(),
    }
}

//! The filesystem worker pool: hashing, restoring and recording run here,
//! on a few dedicated threads, never on the tasks that handle events. A
//! filesystem call may never return (a hung FUSE daemon, a stopped NFS
//! server): each job has a deadline, past which its owner hears
//! [`PoolError::TimedOut`] and goes on, and the thread that holds it is
//! written off and replaced, up to [`PoolSettings::max_stuck`] of them.
//!
//! Work on one file (one [`JobKey::path`]) runs one job at a time, in
//! submission order. A file, or a filesystem ([`JobKey::dev`]), whose job
//! is stuck fails new jobs at once ([`PoolError::Stuck`]) instead of
//! sending another thread into the same hang, so N hung files on one
//! mount cost one thread. Past `max_stuck` threads stuck on distinct
//! filesystems no replacement is started: the pool works on with what is
//! left, and once every thread hangs, jobs time out in the queue (each is
//! still answered, at its deadline) until a hung call returns.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

/// Why a job's result did not come.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The job did not finish within its deadline; its thread, if it ran,
    /// is written off until the call returns.
    #[error("the filesystem did not answer within {0:?}")]
    TimedOut(Duration),
    /// An earlier job on the same file or filesystem is stuck.
    #[error("an earlier call on this file or its filesystem has not returned")]
    Stuck,
    /// The queue is at `queue_max`.
    #[error("the filesystem work queue is full")]
    Full,
    /// The pool was shut down.
    #[error("the filesystem worker pool has stopped")]
    Stopped,
    /// The job panicked (a bug): logged, and answered so.
    #[error("the filesystem job failed unexpectedly")]
    Panicked,
}

impl PoolError {
    /// The `reason` label of `reflex_fs_jobs_failed_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TimedOut(_) => "timeout",
            Self::Stuck => "stuck",
            Self::Full => "full",
            Self::Stopped => "stopped",
            Self::Panicked => "panicked",
        }
    }
}

/// The pool's bounds (`fs:` in `reflex.yaml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Threads that run jobs.
    pub threads: usize,
    /// How long a job may take, from submission.
    pub timeout: Duration,
    /// Threads written off as stuck that are replaced; past this the
    /// pool shrinks.
    pub max_stuck: usize,
    /// Jobs waiting at most; more fail at once.
    pub queue_max: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            threads: 4,
            timeout: Duration::from_secs(5),
            max_stuck: 16,
            queue_max: 4096,
        }
    }
}

/// What a job works on: jobs with the same `path` run one at a time, and
/// a stuck job fails later ones with the same `path` or `dev`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// The file.
    pub path: String,
    /// Its filesystem, when known (0: unknown).
    pub dev: u32,
}

type Fail = Box<dyn FnOnce(PoolError) + Send>;

struct Job {
    key: JobKey,
    op: &'static str,
    deadline: Instant,
    /// Runs the work and reports its result, unless `fail` was called.
    run: Box<dyn FnOnce() + Send>,
    fail: Fail,
}

struct Running {
    key: JobKey,
    op: &'static str,
    deadline: Instant,
    fail: Fail,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Running jobs by id.
    running: HashMap<u64, Running>,
    /// Files with a job running (stuck ones included).
    busy: HashSet<String>,
    /// Files and filesystems with a job stuck, and how many.
    stuck_paths: HashMap<String, usize>,
    stuck_devs: HashMap<u32, usize>,
    /// Threads alive, and of those written off.
    threads: usize,
    stuck_threads: usize,
    next_id: u64,
    stopped: bool,
}

struct Inner {
    state: Mutex<State>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// The watchdog waits here for the next deadline.
    watch: Condvar,
    settings: PoolSettings,
    metrics: PoolMetrics,
}

/// A handle on the pool; clones share it. Dropping the last handle does
/// not stop it: [`FsPool::stop`] does.
#[derive(Clone)]
pub struct FsPool {
    inner: Arc<Inner>,
}

impl FsPool {
    /// Starts `settings.threads` workers and the watchdog.
    pub fn start(settings: PoolSettings, metrics: PoolMetrics) -> Self {
        let settings = PoolSettings {
            threads: settings.threads.max(1),
            ..settings
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            watch: Condvar::new(),
            settings,
            metrics,
        });
        for _ in 0..settings.threads {
            spawn_worker(&inner);
        }
        let watchdog = inner.clone();
        let _ = thread::Builder::new()
            .name("reflex-fs-watch".into())
            .spawn(move || watchdog.watchdog());
        Self { inner }
    }

    /// The bounds in force.
    pub fn settings(&self) -> PoolSettings {
        self.inner.settings
    }

    /// Runs `work` on a worker and hands its result, or why there is none,
    /// to `done` exactly once (on the worker, the watchdog, or at once here
    /// when the job is refused).
    pub fn submit<T, W, D>(&self, key: JobKey, op: &'static str, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
        D: FnOnce(Result<T, PoolError>) + Send + 'static,
    {
        type Reply<T> = Box<dyn FnOnce(Result<T, PoolError>) + Send>;
        let reply: Arc<Mutex<Option<Reply<T>>>> = Arc::new(Mutex::new(Some(Box::new(done))));
        let on_fail = reply.clone();
        let run = Box::new(move || {
            let out = work();
            // Taken by `fail` when the deadline passed first: the result
            // comes too late for anyone to wait for it.
            let reply = lock(&reply).take();
            if let Some(reply) = reply {
                reply(Ok(out));
            }
        });
        let fail: Fail = Box::new(move |e| {
            let reply = lock(&on_fail).take();
            if let Some(reply) = reply {
                reply(Err(e));
            }
        });
        let inner = &self.inner;
        let refused = {
            let mut state = lock(&inner.state);
            if state.stopped {
                Some(PoolError::Stopped)
            } else if state.stuck_paths.contains_key(&key.path)
                || (key.dev != 0 && state.stuck_devs.contains_key(&key.dev))
            {
                Some(PoolError::Stuck)
            } else if state.queue.len() >= inner.settings.queue_max {
                Some(PoolError::Full)
            } else {
                state.queue.push_back(Job {
                    key,
                    op,
                    deadline: Instant::now() + inner.settings.timeout,
                    run,
                    fail,
                });
                inner.metrics.queued.set(state.queue.len() as i64);
                inner.work.notify_all();
                inner.watch.notify_one();
                return;
            }
        };
        if let Some(e) = refused {
            inner.count_failure(op, &e);
            fail(e);
        }
    }

    /// Stops the workers after their current job; queued jobs are answered
    /// [`PoolError::Stopped`].
    pub fn stop(&self) {
        let queued: Vec<Job> = {
            let mut state = lock(&self.inner.state);
            state.stopped = true;
            state.queue.drain(..).collect()
        };
        self.inner.work.notify_all();
        self.inner.watch.notify_all();
        for job in queued {
            (job.fail)(PoolError::Stopped);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job that panicked poisons nothing the pool relies on.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_worker(inner: &Arc<Inner>) -> bool {
    let worker = inner.clone();
    lock(&inner.state).threads += 1;
    let spawned = thread::Builder::new()
        .name("reflex-fs".into())
        .spawn(move || worker.work());
    if spawned.is_err() {
        lock(&inner.state).threads -= 1;
        tracing::error!("starting a filesystem worker thread failed");
    }
    spawned.is_ok()
}

impl Inner {
    fn count_failure(&self, op: &str, e: &PoolError) {
        self.metrics
            .failed
            .with_label_values(&[op, e.reason()])
            .inc();
        if matches!(e, PoolError::TimedOut(_)) {
            self.metrics.timeouts.with_label_values(&[op]).inc();
        }
    }

    /// A worker: takes the first queued job whose file is not busy, runs
    /// it, and exits when written off while the pool has replaced it.
    fn work(self: Arc<Self>) {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                state.threads -= 1;
                return;
            }
            let Some(at) = state
                .queue
                .iter()
                .position(|j| !state.busy.contains(&j.key.path))
            else {
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let job = state.queue.remove(at).expect("position is in the queue");
            let id = state.next_id;
            state.next_id += 1;
            state.busy.insert(job.key.path.clone());
            let Job {
                key,
                op,
                deadline,
                run,
                fail,
            } = job;
            state.running.insert(
                id,
                Running {
                    key: key.clone(),
                    op,
                    deadline,
                    fail,
                },
            );
            self.metrics.queued.set(state.queue.len() as i64);
            self.metrics.running.set(state.running.len() as i64);
            drop(state);
            // A panicking job must not take the thread's accounting with it,
            // nor leave its owner waiting for an answer.
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err();
            state = lock(&self.state);
            state.busy.remove(&key.path);
            let mine = state.running.remove(&id);
            if panicked && let Some(running) = mine {
                drop(state);
                tracing::error!(path = key.path, op, "a filesystem job panicked");
                self.count_failure(op, &PoolError::Panicked);
                (running.fail)(PoolError::Panicked);
                state = lock(&self.state);
                self.metrics.running.set(state.running.len() as i64);
                self.work.notify_all();
                continue;
            }
            if mine.is_none() {
                // Written off by the watchdog: the call returned at last.
                state.stuck_threads -= 1;
                decrement(&mut state.stuck_paths, &key.path);
                if key.dev != 0 {
                    decrement(&mut state.stuck_devs, &key.dev);
                }
                self.metrics.stuck.set(state.stuck_threads as i64);
                let live = state.threads - state.stuck_threads;
                if live > self.settings.threads {
                    state.threads -= 1;
                    return;
                }
            }
            self.metrics.running.set(state.running.len() as i64);
            // The file may have jobs waiting behind this one.
            self.work.notify_all();
        }
    }

    /// Fails jobs past their deadline, queued or running; writes off the
    /// threads of running ones and replaces them while `max_stuck` allows.
    fn watchdog(self: Arc<Self>) {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            let timeout = PoolError::TimedOut(self.settings.timeout);
            let mut failed: Vec<(&'static str, Fail, PoolError)> = Vec::new();
            let mut replace = 0;
            let mut at = 0;
            while at < state.queue.len() {
                if state.queue[at].deadline <= now {
                    let job = state.queue.remove(at).expect("index in the queue");
                    failed.push((job.op, job.fail, timeout.clone()));
                } else {
                    at += 1;
                }
            }
            let late: Vec<u64> = state
                .running
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                let running = state.running.remove(&id).expect("listed above");
                *state
                    .stuck_paths
                    .entry(running.key.path.clone())
                    .or_default() += 1;
                if running.key.dev != 0 {
                    *state.stuck_devs.entry(running.key.dev).or_default() += 1;
                }
                state.stuck_threads += 1;
                if state.stuck_threads <= self.settings.max_stuck {
                    replace += 1;
                }
                tracing::warn!(
                    path = running.key.path,
                    op = running.op,
                    timeout = ?self.settings.timeout,
                    "a filesystem call has not returned; its thread is written off"
                );
                failed.push((running.op, running.fail, timeout.clone()));
            }
            // Jobs queued behind a file or filesystem now known stuck
            // would only wait for their deadline.
            let mut at = 0;
            while at < state.queue.len() {
                let key = &state.queue[at].key;
                if state.stuck_paths.contains_key(&key.path)
                    || (key.dev != 0 && state.stuck_devs.contains_key(&key.dev))
                {
                    let job = state.queue.remove(at).expect("index in the queue");
                    failed.push((job.op, job.fail, PoolError::Stuck));
                } else {
                    at += 1;
                }
            }
            self.metrics.queued.set(state.queue.len() as i64);
            self.metrics.running.set(state.running.len() as i64);
            self.metrics.stuck.set(state.stuck_threads as i64);
            let next = state
                .queue
                .iter()
                .map(|j| j.deadline)
                .chain(state.running.values().map(|r| r.deadline))
                .min();
            if !failed.is_empty() || replace > 0 {
                drop(state);
                for _ in 0..replace {
                    spawn_worker(&self);
                }
                for (op, fail, e) in failed {
                    self.count_failure(op, &e);
                    fail(e);
                }
                state = lock(&self.state);
                continue;
            }
            let wait = next.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(now)
            });
            state = self
                .watch
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[path = "pool_metrics.rs"]
mod metrics;
pub use metrics::{OPS, PoolMetrics};

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;

//! The settler's task: both lanes in, both lanes out.
use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, watch};

use super::{Followup, Settled, Settler, cpu::CpuSettler};
use crate::{
    events::Record,
    lanes::{Lane, LaneReceiver, LaneSenders, Taken},
    policy::PolicySet,
};

impl Settler {
    /// Runs until both lanes of `records` close or `out` has no receiver.
    /// `initial` are events to pass on first (the drift [`Settler::new`]
    /// returned). A bulk record is taken only when the bulk lane out has
    /// room for it, so a slow engine on the bulk side never stops files.
    pub async fn run(
        mut self,
        initial: Vec<Record>,
        mut records: LaneReceiver<Record>,
        mut policies: watch::Receiver<Arc<PolicySet>>,
        mut followups: mpsc::UnboundedReceiver<Followup>,
        out: LaneSenders<Settled>,
    ) {
        let mut initial = initial;
        let mut exec_changes = self.exec.take_changes();
        let mut looked = self.files.take_looked();
        let current = policies.borrow_and_update().clone();
        if !Arc::ptr_eq(&current, &self.set) {
            initial.extend(self.configure(current));
        }
        let period = self
            .cpu
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), CpuSettler::interval);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        if !send_set(&out, &self.set).await || !send_all(&out.file, initial).await {
            return;
        }
        let mut idle = crate::telemetry::alive::beat_interval();
        loop {
            if let Some(beat) = &self.beat {
                beat.mark();
            }
            let deadline = self.next_deadline();
            let (lane, finished) = tokio::select! {
                // A revert's new inode is watched before anything else is
                // looked at, so the next write to it is not missed.
                biased;
                Some(followup) = followups.recv() => {
                    self.follow(followup);
                    continue;
                }
                // A look at a file came back from the filesystem pool.
                Some(done) = next_change(&mut looked) => {
                    (Lane::File, self.files.looked(done, Instant::now()))
                }
                // A file an exec policy names may have appeared: take it in
                // before the next exec is looked at.
                Some(path) = next_path(&mut exec_changes) => {
                    self.exec.changed(&path);
                    // What else is queued is taken in with it; the kill
                    // table hears of the lot once.
                    if let Some(rx) = exec_changes.as_mut() {
                        for _ in 0..PATHS_PER_TURN {
                            match rx.try_recv() {
                                Ok(path) => self.exec.changed(&path),
                                Err(_) => break,
                            }
                        }
                    }
                    self.exec.flush(Instant::now());
                    continue;
                }
                Ok(()) = policies.changed() => {
                    let set = policies.borrow_and_update().clone();
                    let drift = self.configure(set.clone());
                    if !send_set(&out, &set).await {
                        return;
                    }
                    (Lane::File, drift)
                }
                // Due changes before new records: a revert is not put off
                // by a steady stream of them.
                () = sleep_until(deadline) => (Lane::File, self.expire(Instant::now())),
                taken = records.recv(Some(&out.bulk)) => match taken {
                    Some(Taken::File(record)) => {
                        let (_, settled) = self.ingest(Lane::File, record, Instant::now());
                        (Lane::File, settled)
                    }
                    Some(Taken::Bulk(record, permit)) => {
                        let (event, settled) = self.ingest(Lane::Bulk, record, Instant::now());
                        match (event, permit) {
                            (Some(event), Some(permit)) => permit.send(Settled::Event(event)),
                            (Some(_), None) => return, // the engine is gone
                            (None, _) => {}
                        }
                        (Lane::File, settled)
                    }
                    None => return,
                },
                _ = tick.tick(), if self.cpu.is_some() => (Lane::Bulk, self.cpu_tick()),
                _ = idle.tick() => continue,
            };
            if !send_all(out.lane(lane), finished).await {
                return;
            }
        }
    }
}

/// Tells both lanes that `set` judges what follows; `false` once the
/// engine is gone.
async fn send_set(out: &LaneSenders<Settled>, set: &Arc<PolicySet>) -> bool {
    for lane in Lane::ALL {
        if out
            .lane(lane)
            .send(Settled::Policies(set.clone()))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// Sends every record; `false` once the receiver is gone.
async fn send_all(out: &mpsc::Sender<Settled>, records: Vec<Record>) -> bool {
    for record in records {
        if out.send(Settled::Event(record)).await.is_err() {
            return false;
        }
    }
    true
}

/// Most changed paths of exec policy directories taken in one turn.
const PATHS_PER_TURN: usize = 1024;

async fn next_path(
    changes: &mut Option<mpsc::Receiver<std::path::PathBuf>>,
) -> Option<std::path::PathBuf> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_change<T>(changes: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

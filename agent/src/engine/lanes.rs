//! The engine's task over both lanes ([`crate::lanes`]): each lane's events
//! are judged by the set that lane last brought, and one planner (throttle
//! windows, kill fuses) serves both.
use std::sync::Arc;

use super::{Engine, Judged};
use crate::{
    lanes::{Lane, LaneReceiver, LaneSenders, Taken},
    policy::PolicySet,
    settle::Settled,
    telemetry::alive::{Stage, beat_interval},
};

/// The policy set in force in each lane, and the sets one lane has brought
/// that the other has yet to reach, oldest first: both lanes bring every
/// set in the same order, so a set is new (and re-arms the fuses) only the
/// first time either lane brings it.
pub struct LaneSets {
    current: [Arc<PolicySet>; 2],
    /// Sets ahead of the slower lane, in order; their index in the stream
    /// of sets is `first + i`.
    ahead: std::collections::VecDeque<Arc<PolicySet>>,
    first: u64,
    /// Where each lane is in the stream of sets.
    at: [u64; 2],
}

impl LaneSets {
    /// Both lanes judging by `set`.
    pub fn new(set: Arc<PolicySet>) -> Self {
        Self {
            current: [set.clone(), set.clone()],
            ahead: std::collections::VecDeque::from([set]),
            first: 0,
            at: [0, 0],
        }
    }

    /// The set judging `lane`'s events now.
    pub fn current(&self, lane: Lane) -> &Arc<PolicySet> {
        &self.current[index(lane)]
    }

    /// `lane` brings `set`; true when no lane had brought it before.
    pub fn bring(&mut self, lane: Lane, set: Arc<PolicySet>) -> bool {
        let i = index(lane);
        if Arc::ptr_eq(&set, &self.current[i]) {
            return false;
        }
        let from = (self.at[i] + 1 - self.first) as usize;
        let known = self
            .ahead
            .iter()
            .skip(from)
            .position(|s| Arc::ptr_eq(s, &set));
        let fresh = match known {
            Some(k) => {
                self.at[i] += 1 + k as u64;
                false
            }
            None => {
                self.ahead.push_back(set.clone());
                self.at[i] = self.first + self.ahead.len() as u64 - 1;
                true
            }
        };
        self.current[i] = set;
        // Sets both lanes have passed are kept no longer.
        let slowest = self.at[0].min(self.at[1]);
        while self.first < slowest {
            self.ahead.pop_front();
            self.first += 1;
        }
        fresh
    }
}

fn index(lane: Lane) -> usize {
    match lane {
        Lane::File => 0,
        Lane::Bulk => 1,
    }
}

impl Engine {
    /// Judges everything from the settler until both lanes close, passing
    /// events some policy matched to `out` in their lane. A bulk event is
    /// taken only when actions have room for its verdicts, so a backlog of
    /// alerts never holds up a file change here.
    pub async fn run(mut self, mut input: LaneReceiver<Settled>, out: LaneSenders<Judged>) {
        let mut sets = LaneSets::new(self.set.clone());
        let beat = self.metrics.as_ref().map(|m| m.alive.beat(Stage::Engine));
        let mut idle = beat_interval();
        loop {
            if let Some(beat) = &beat {
                beat.mark();
            }
            let taken = tokio::select! {
                taken = input.recv(Some(&out.bulk)) => taken,
                _ = idle.tick() => continue,
            };
            let (lane, settled, permit) = match taken {
                Some(Taken::File(settled)) => (Lane::File, settled, None),
                Some(Taken::Bulk(settled, permit)) => (Lane::Bulk, settled, permit),
                None => return,
            };
            let record = match settled {
                Settled::Policies(set) => {
                    if sets.bring(lane, set) {
                        self.planner.reset_fuses();
                    }
                    continue;
                }
                Settled::Event(record) => record,
            };
            if !Arc::ptr_eq(&self.set, sets.current(lane)) {
                self.set = sets.current(lane).clone();
            }
            let verdicts = self.judge(&record);
            if verdicts.is_empty() {
                continue;
            }
            let judged = Judged { record, verdicts };
            let sent = match (lane, permit) {
                (Lane::Bulk, Some(permit)) => {
                    permit.send(judged);
                    true
                }
                (Lane::Bulk, None) => false,
                (Lane::File, _) => out.file.send(judged).await.is_ok(),
            };
            if !sent {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The reactor: records from the sensor are evaluated against the current
//! policy set and answered by the executor. A new set is swapped in between
//! two records, so no event is lost or judged by half a set.
pub mod reload;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::{actions::Executor, events::Record, policy::PolicySet};

/// Evaluates every record until the channel closes.
pub async fn evaluate(
    mut records: mpsc::Receiver<Record>,
    mut policies: watch::Receiver<Arc<PolicySet>>,
    mut executor: Executor,
) {
    let mut set = policies.borrow_and_update().clone();
    while let Some(record) = records.recv().await {
        if policies.has_changed().unwrap_or(false) {
            set = policies.borrow_and_update().clone();
            executor.reset_fuses();
        }
        let matched = set.evaluate(&record);
        executor.handle(&record, &matched);
    }
}

//! Evaluation: which policies an event matches. It cannot fail.
use std::sync::Arc;

use super::{
    index::PathIndex,
    model::{Policy, PolicyRef},
};
use crate::events::{Body, Record};

/// A compiled, indexed set of policies. Swapped whole on reload.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<PolicyRef>,
    exec: PathIndex,
}

impl PolicySet {
    /// Indexes `policies` (already validated, names unique).
    pub fn new(policies: Vec<Policy>) -> Self {
        let exec = PathIndex::exec(&policies);
        Self {
            policies: policies.into_iter().map(Arc::new).collect(),
            exec,
        }
    }

    /// Every policy, in load order.
    pub fn policies(&self) -> &[PolicyRef] {
        &self.policies
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies `record` matches, in load order.
    pub fn evaluate(&self, record: &Record) -> Vec<PolicyRef> {
        let candidates = match &record.body {
            Body::Exec(exec) => {
                let path = record.process.exe.as_deref().unwrap_or(&exec.filename);
                self.exec.candidates(path)
            }
            Body::Exit(_) => Vec::new(),
        };
        candidates
            .into_iter()
            .map(|i| &self.policies[i])
            .filter(|p| {
                p.when.as_ref().is_none_or(|m| m.matches(&record.process))
                    && !p
                        .unless
                        .as_ref()
                        .is_some_and(|m| m.matches(&record.process))
            })
            .cloned()
            .collect()
    }
}

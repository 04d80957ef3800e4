//! Deeper reads take turns: each lane's deeper pages wait until every first and second
//! read is fetched, and spend no more of a tenant's bucket than the run's allowance.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use super::jobs::{Job, OpenLane};
use crate::budget::BudgetOf;

/// The requests of deeper reads: none before every frame of the first two reads is
/// fetched (deeper reads never delay those), then per paced bucket what the run's
/// allowance leaves once they are done.
pub(super) struct DeepTurns<'a> {
    pub(super) allowance: &'a BTreeMap<BudgetOf, u64>,
    /// Frames of the first two reads not fetched yet.
    pub(super) shallow_left: Mutex<usize>,
    pub(super) shallow_done: Condvar,
    /// Per paced bucket, the requests deeper reads may still send; counted once the
    /// first two reads are done.
    pub(super) left: Mutex<Option<BTreeMap<BudgetOf, u64>>>,
}

impl<'a> DeepTurns<'a> {
    pub(super) fn new(jobs: &[Job], allowance: &'a BTreeMap<BudgetOf, u64>) -> Self {
        DeepTurns {
            allowance,
            shallow_left: Mutex::new(jobs.iter().filter(|j| !j.pass.is_deep()).count()),
            shallow_done: Condvar::new(),
            left: Mutex::new(None),
        }
    }

    /// A frame of the first two reads is done (fetched, failed or skipped).
    pub(super) fn shallow_finished(&self) {
        let mut left = self.shallow_left.lock().unwrap_or_else(|p| p.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.shallow_done.notify_all();
        }
    }

    pub(super) fn take(&self, lanes: &[OpenLane], budget: &BudgetOf) -> bool {
        let mut shallow = self.shallow_left.lock().unwrap_or_else(|p| p.into_inner());
        while *shallow > 0 {
            shallow = self
                .shallow_done
                .wait(shallow)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(shallow);
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let left = left.get_or_insert_with(|| {
            // What the first two reads left of each tenant's bucket's allowance.
            let spent = |(tenant, bucket): &BudgetOf| -> u64 {
                lanes
                    .iter()
                    .filter(|l| l.source().bucket == *bucket && l.tenant == tenant.as_deref())
                    .map(|l| l.client.spent().requests)
                    .sum()
            };
            self.allowance
                .iter()
                .map(|(budget, &allowance)| {
                    (budget.clone(), allowance.saturating_sub(spent(budget)))
                })
                .collect()
        });
        match left.get_mut(budget) {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

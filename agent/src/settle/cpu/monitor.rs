//! Thresholds held over time: `cpu_high` once when a `cpu` policy's
//! threshold has held for its whole duration, `cpu_normal` once when it
//! falls back, per process or for the host.
use std::collections::HashMap;

use crate::{
    events::{
        Body, ProcessContext, Record,
        cpu::{Cpu, CpuScope, CpuState, TopProcess},
    },
    policy::{PolicySet, model::Trigger},
    process::ProcessTable,
};

use super::sampler::CpuSample;

/// Processes listed in a host event.
const TOP: usize = 5;

#[derive(Debug, Default)]
struct Episode {
    above_since_ns: Option<u64>,
    fired: bool,
}

/// Episode state per (policy, process) and per host policy.
#[derive(Debug, Default)]
pub struct CpuMonitor {
    episodes: HashMap<(String, u32), Episode>,
}

impl CpuMonitor {
    /// Feeds one interval's measurements taken at `now_ns` (boot time);
    /// returns the events that fire.
    pub fn observe(
        &mut self,
        sample: &CpuSample,
        set: &PolicySet,
        now_ns: u64,
        time: &str,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let mut table = ProcessTable::new();
        let mut top: Vec<(u32, f64)> = sample.processes.iter().map(|(p, v)| (*p, *v)).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(TOP);
        let top_list: Vec<TopProcess> = top
            .iter()
            .map(|&(pid, percent)| {
                let info = crate::process::procfs::read(pid);
                TopProcess {
                    pid,
                    percent: round(percent),
                    comm: info.as_ref().map(|i| i.comm.clone()).unwrap_or_default(),
                    exe: info.and_then(|i| i.exe),
                }
            })
            .collect();
        let mut live = Vec::new();
        for policy in set.policies() {
            let Trigger::Cpu {
                scope,
                above,
                duration,
            } = &policy.trigger
            else {
                continue;
            };
            let hold_ns = duration.as_nanos() as u64;
            // (episode key, measured value, process context) to look at.
            let mut candidates = Vec::new();
            match scope {
                CpuScope::Host => {
                    candidates.push((
                        (policy.name.clone(), 0),
                        sample.host,
                        ProcessContext::default(),
                    ));
                }
                CpuScope::Process => {
                    // Every process with an open episode is looked at, so
                    // one that stopped running still ends its episode.
                    let mut pids: Vec<u32> = sample.processes.keys().copied().collect();
                    pids.extend(
                        self.episodes
                            .keys()
                            .filter(|(p, _)| *p == policy.name)
                            .map(|(_, pid)| *pid),
                    );
                    pids.sort_unstable();
                    pids.dedup();
                    for pid in pids {
                        let value = sample.processes.get(&pid).copied().unwrap_or(0.0);
                        let open = self.episodes.contains_key(&(policy.name.clone(), pid));
                        if value <= *above && !open {
                            continue;
                        }
                        let context = table.context_of(pid);
                        let admitted = policy.when.as_ref().is_none_or(|m| m.matches(&context))
                            && !policy.unless.as_ref().is_some_and(|m| m.matches(&context));
                        if admitted || open {
                            candidates.push(((policy.name.clone(), pid), value, context));
                        }
                    }
                }
            }
            for (key, value, process) in candidates {
                let episode = self.episodes.entry(key.clone()).or_default();
                let state = if value > *above {
                    let since = *episode.above_since_ns.get_or_insert(now_ns);
                    if !episode.fired && now_ns.saturating_sub(since) >= hold_ns {
                        episode.fired = true;
                        Some(CpuState::High)
                    } else {
                        None
                    }
                } else {
                    let was = episode.fired;
                    *episode = Episode::default();
                    was.then_some(CpuState::Normal)
                };
                if episode.above_since_ns.is_some() {
                    live.push(key);
                }
                if let Some(state) = state {
                    out.push(Record {
                        time: time.to_string(),
                        ktime_ns: now_ns,
                        kind: state.kind(),
                        process,
                        body: Body::Cpu(Cpu {
                            policy: policy.name.clone(),
                            scope: *scope,
                            state,
                            percent: round(value),
                            host_percent: round(sample.host),
                            top: top_list.clone(),
                        }),
                    });
                }
            }
        }
        self.episodes.retain(|k, _| live.contains(k));
        out
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{events::Kind, policy::compile_valid};

    fn set(text: &str) -> PolicySet {
        PolicySet::new(compile_valid(text))
    }

    fn host(percent: f64) -> CpuSample {
        CpuSample {
            processes: HashMap::new(),
            host: percent,
        }
    }

    const SECOND: u64 = 1_000_000_000;

    fn states(monitor: &mut CpuMonitor, set: &PolicySet, at: u64, percent: f64) -> Vec<Kind> {
        monitor
            .observe(&host(percent), set, at * SECOND, "")
            .iter()
            .map(|r| r.kind)
            .collect()
    }

    #[test]
    fn a_host_episode_fires_once_when_held_and_once_when_it_ends() {
        let set =
            set("name: hot\non: { cpu: { scope: host, above: 90%, for: 2s } }\ndo: [alert]\n");
        let mut monitor = CpuMonitor::default();
        assert!(
            states(&mut monitor, &set, 0, 95.0).is_empty(),
            "not held yet"
        );
        assert!(states(&mut monitor, &set, 1, 95.0).is_empty());
        assert_eq!(states(&mut monitor, &set, 2, 95.0), [Kind::CpuHigh]);
        assert!(
            states(&mut monitor, &set, 3, 99.0).is_empty(),
            "once per episode"
        );
        assert_eq!(states(&mut monitor, &set, 4, 10.0), [Kind::CpuNormal]);
        assert!(states(&mut monitor, &set, 5, 10.0).is_empty());
        assert!(
            states(&mut monitor, &set, 6, 95.0).is_empty(),
            "a new rise starts over"
        );
        assert!(
            states(&mut monitor, &set, 7, 50.0).is_empty(),
            "a dip before it held ends nothing"
        );
        assert!(states(&mut monitor, &set, 8, 95.0).is_empty());
        assert_eq!(states(&mut monitor, &set, 10, 95.0), [Kind::CpuHigh]);
    }
}

//! Deciding what a matched policy does with an event: mode, throttle and the
//! kill fuse applied. Pure and driven by event time, so `reflex replay`
//! reaches the same decisions as the live agent.
use serde::{Deserialize, Serialize};

use super::{
    fuse::{Executable, KillFuse},
    throttle::Throttler,
};
use crate::{
    events::{Body, Kind, Record, file::FileChange},
    policy::{Action, Mode, Policy, accept::OnDrift, spec::ThrottleKey},
};

/// Default number of distinct executables a policy may kill in a minute.
pub const DEFAULT_FUSE_LIMIT: usize = 5;

/// What a policy decided for one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Policy name.
    pub policy: String,
    /// Mode in effect (monitor when the kill fuse has blown).
    pub mode: Mode,
    /// Actions carried out (enforce), in order.
    pub actions: Vec<String>,
    /// Actions that would have been carried out (monitor).
    pub would: Vec<String>,
    /// Alerts and hooks held back by `throttle` since the last report.
    pub suppressed: u64,
    /// Why the decision differs from the policy as written, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A decision plus which of the policy's actions to carry out.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The decision, as reported.
    pub decision: Decision,
    /// Positions in `policy.actions` to carry out, in order (never `alert`).
    pub steps: Vec<usize>,
    /// Whether to write an alert.
    pub report: bool,
    /// Whether this event blew the policy's kill fuse.
    pub fuse_blew: bool,
}

/// Keeps the state decisions depend on: throttle windows and kill fuses.
#[derive(Debug)]
pub struct Planner {
    throttle: Throttler,
    fuse: KillFuse,
}

impl Planner {
    /// A planner whose fuses blow past `fuse_limit` executables a minute.
    pub fn new(fuse_limit: usize) -> Self {
        Self {
            throttle: Throttler::default(),
            fuse: KillFuse::new(fuse_limit),
        }
    }

    /// Throttle windows held, and occurrences so far that shared an
    /// overflow window.
    pub fn throttle_state(&self) -> (usize, u64) {
        (self.throttle.len(), self.throttle.overflowed())
    }

    /// Executables the kill fuses remember.
    pub fn fuse_entries(&self) -> usize {
        self.fuse.entries()
    }

    /// Re-arms every kill fuse (on reload).
    pub fn reset_fuses(&mut self) {
        self.fuse.reset();
    }

    /// Decides what `policy`, which matched `record`, does.
    pub fn plan(&mut self, policy: &Policy, record: &Record) -> Plan {
        let now = record.ktime_ns;
        let has = |name: &str| policy.actions.iter().any(|a| a.name() == name);
        let mode = policy.mode;
        let mut note = None;
        let mut fuse_blew = false;
        // The in-kernel kill at exec comes before any decision here; say so
        // when the decision is not to kill.
        let in_kernel = match &record.body {
            Body::Exec(exec) if exec.killed => {
                "; the kernel had already killed this process at exec"
            }
            _ => "",
        };
        // A blown fuse switches the policy's kills off, nothing else: its
        // reverts, blocks and hooks go on.
        let mut kills_off = false;
        if mode == Mode::Enforce && self.fuse.is_blown(&policy.name) {
            kills_off = true;
            note = Some(format!(
                "kill fuse blown; kills are off until reload{in_kernel}"
            ));
        }
        if mode == Mode::Enforce
            && !kills_off
            && has("kill")
            && let Some(exe) = executable(record)
            && let Some(count) = self.fuse.record(&policy.name, exe, now)
        {
            kills_off = true;
            fuse_blew = true;
            note = Some(format!(
                "kill fuse blown: {count} different executables killed within a minute; \
                 the policy's kills are off until reload (its other actions go on){in_kernel}"
            ));
        }

        let budgeted = mode == Mode::Monitor || has("alert") || has("run");
        let verdict = match (&policy.throttle, budgeted) {
            (Some(limit), true) => {
                let key = throttle_key(limit.per, record);
                self.throttle.check(&policy.name, key, limit, now)
            }
            _ => super::throttle::Admission {
                allowed: true,
                suppressed: 0,
            },
        };
        // A blown fuse is always reported, throttle or not.
        let report_anyway = note.is_some() && policy.mode == Mode::Enforce;

        let mut decision = Decision {
            policy: policy.name.clone(),
            mode,
            actions: Vec::new(),
            would: Vec::new(),
            suppressed: verdict.suppressed,
            note,
        };
        let mut steps = Vec::new();
        let report;
        match mode {
            Mode::Monitor => {
                decision.would = policy
                    .actions
                    .iter()
                    .filter(|a| !(matches!(a, Action::Revert { .. }) && keeps(policy, record)))
                    .map(Action::name)
                    .filter(|n| *n != "alert")
                    .map(str::to_string)
                    .collect();
                report = verdict.allowed || report_anyway;
            }
            Mode::Enforce => {
                for (i, action) in policy.actions.iter().enumerate() {
                    let go = match action {
                        Action::Alert { .. } => false,
                        Action::Run { .. } => verdict.allowed,
                        Action::Kill { .. } if kills_off => {
                            decision.would.push(action.name().to_string());
                            false
                        }
                        // Nothing to kill when the load has gone.
                        Action::Kill { .. } => record.kind != Kind::CpuNormal,
                        Action::Revert { .. } => !keeps(policy, record),
                        _ => true,
                    };
                    if go {
                        steps.push(i);
                        decision.actions.push(action.name().to_string());
                    }
                }
                // The fuse blowing is always reported, throttle or not.
                let alert = has("alert") && (verdict.allowed || fuse_blew);
                report = alert || fuse_blew;
                if alert {
                    decision.actions.push("alert".to_string());
                }
            }
        }
        Plan {
            decision,
            steps,
            report,
            fuse_blew,
        }
    }
}

/// What the kill fuse counts for `record`: the script's identity when an
/// interpreter ran a covered script (its copies are one script), else the
/// loaded file's. Nothing for a foreign file at a covered path: a user who
/// bind-mounts files of their own there in a private namespace must not
/// blow the fuse that protects the real one.
fn executable(record: &Record) -> Option<Executable> {
    let kernel = match &record.body {
        Body::Exec(exec) if exec.foreign => return None,
        Body::Exec(exec) => exec.script_id.or(exec.identity()),
        _ => None,
    };
    Some(match kernel.or(record.process.exe_id) {
        Some(id) => Executable::Id(id),
        None => Executable::Path(
            record
                .process
                .exe
                .clone()
                .unwrap_or_else(|| record.process.comm.clone()),
        ),
    })
}

/// Whether `policy` keeps the file as `record` found it: the change became
/// its baseline, or it is drift the policy only reports (`on_drift: report`).
fn keeps(policy: &Policy, record: &Record) -> bool {
    let Body::File(file) = &record.body else {
        return false;
    };
    file.accepted
        .as_ref()
        .is_some_and(|a| a.policies.contains(&policy.name))
        || (file.change == Some(FileChange::Drift) && policy.answers.on_drift == OnDrift::Report)
}

/// The throttle budget an event draws from.
fn throttle_key(per: ThrottleKey, record: &Record) -> String {
    match per {
        ThrottleKey::Policy => String::new(),
        ThrottleKey::Process => format!(
            "{}@{}",
            record.process.pid,
            record.process.start_ktime_ns.unwrap_or(0)
        ),
        // The file and connect families key on their own fields.
        ThrottleKey::File | ThrottleKey::Remote => match &record.body {
            Body::File(file) => file.path.clone().unwrap_or_default(),
            Body::Connect(c) => c.remote_addr.to_string(),
            Body::Exec(_) | Body::Exit(_) | Body::Fork(_) | Body::Cpu(_) => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{Exec, Kind, ProcessContext},
        policy::compile_valid,
    };

    fn policy(text: &str) -> Policy {
        compile_valid(text).remove(0)
    }

    fn record(pid: u32, exe: &str, ktime_ns: u64) -> Record {
        Record {
            time: String::new(),
            ktime_ns,
            kind: Kind::Exec,
            process: ProcessContext {
                pid,
                exe: Some(exe.into()),
                start_ktime_ns: Some(ktime_ns),
                ..ProcessContext::default()
            },
            body: Body::Exec(Exec {
                filename: exe.into(),
                argv: vec![],
                argv_truncated: false,
                ..Exec::default()
            }),
        }
    }

    const KILLER: &str = "name: k\nmode: enforce\non: { exec: {} }\ndo: [kill, alert]\nthrottle: { per: policy, max: 1, every: 10s }\n";

    #[test]
    fn enforce_carries_out_and_throttles_only_the_alert() {
        let p = policy(KILLER);
        let mut planner = Planner::new(DEFAULT_FUSE_LIMIT);
        let first = planner.plan(&p, &record(1, "/a", 0));
        assert_eq!(first.decision.actions, ["kill", "alert"]);
        assert!(first.report);
        let second = planner.plan(&p, &record(2, "/a", 1));
        assert_eq!(
            second.decision.actions,
            ["kill"],
            "kills are never throttled"
        );
        assert!(!second.report);
        let later = planner.plan(&p, &record(3, "/a", 11_000_000_000));
        assert_eq!(later.decision.suppressed, 1);
        assert!(later.report);
    }

    #[test]
    fn monitor_only_says_what_it_would_do() {
        let p = policy("name: m\non: { exec: {} }\ndo: [kill, alert]\n");
        let plan = Planner::new(DEFAULT_FUSE_LIMIT).plan(&p, &record(1, "/a", 0));
        assert_eq!(plan.decision.mode, Mode::Monitor);
        assert_eq!(plan.decision.would, ["kill"]);
        assert!(plan.steps.is_empty());
        assert!(plan.report);
    }

    #[test]
    fn a_blown_fuse_switches_kills_off_and_nothing_else() {
        let p = policy(
            "name: k\nmode: enforce\non: { exec: {} }\ndo: [kill, { run: { command: [\"/bin/true\"] } }, alert]\n",
        );
        let mut planner = Planner::new(2);
        for (i, exe) in ["/a", "/b"].iter().enumerate() {
            let plan = planner.plan(&p, &record(i as u32, exe, i as u64));
            assert_eq!(plan.decision.actions, ["kill", "run", "alert"]);
        }
        let blown = planner.plan(&p, &record(9, "/c", 3));
        assert!(blown.fuse_blew);
        assert_eq!(blown.decision.mode, Mode::Enforce);
        assert_eq!(
            blown.decision.actions,
            ["run", "alert"],
            "the hook still runs"
        );
        assert_eq!(
            blown.decision.would,
            ["kill"],
            "the kill that blew it is not done"
        );
        assert!(blown.report && blown.decision.note.is_some());
        let after = planner.plan(&p, &record(10, "/a", 4));
        assert_eq!(after.decision.actions, ["run", "alert"], "kills stay off");
        assert!(!after.fuse_blew, "it blows once");
        planner.reset_fuses();
        assert_eq!(
            planner.plan(&p, &record(11, "/a", 5)).decision.actions,
            ["kill", "run", "alert"]
        );
    }

    fn created(change: FileChange) -> Record {
        Record {
            time: String::new(),
            ktime_ns: 1,
            kind: Kind::File,
            process: ProcessContext::default(),
            body: Body::File(crate::events::file::File {
                path: Some("/etc/app/evil.conf".into()),
                change: Some(change),
                changes: vec![change, FileChange::Create],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_created_file_is_reverted_reported_or_left_as_the_policy_says() {
        let text = |mode: &str, on_drift: &str| {
            format!(
                "name: m\nmode: {mode}\non: {{ file: {{ paths: [\"/etc/app/*.conf\"] }} }}\non_drift: {on_drift}\ndo: [revert, alert]\n"
            )
        };
        let mut planner = Planner::new(DEFAULT_FUSE_LIMIT);
        let enforce = planner.plan(
            &policy(&text("enforce", "revert")),
            &created(FileChange::Create),
        );
        assert_eq!(enforce.decision.actions, ["revert", "alert"]);
        let monitor = planner.plan(
            &policy(&text("monitor", "revert")),
            &created(FileChange::Create),
        );
        assert_eq!(monitor.decision.would, ["revert"]);
        assert!(monitor.steps.is_empty(), "monitor leaves it");
        let report = planner.plan(
            &policy(&text("enforce", "report")),
            &created(FileChange::Drift),
        );
        assert_eq!(
            report.decision.actions,
            ["alert"],
            "on_drift: report leaves it"
        );
        let live = planner.plan(
            &policy(&text("enforce", "report")),
            &created(FileChange::Create),
        );
        assert_eq!(
            live.decision.actions,
            ["revert", "alert"],
            "on_drift is for start-up only"
        );
    }

    #[test]
    fn the_fuse_counts_files_not_names() {
        let p = policy(KILLER);
        let mut planner = Planner::new(1);
        for (pid, name) in ["/usr/bin/nc", "/tmp/link-to-nc", "/dev/fd/3"]
            .iter()
            .enumerate()
        {
            let mut r = record(pid as u32, name, pid as u64);
            if let Body::Exec(exec) = &mut r.body {
                (exec.dev, exec.ino, exec.killed) = (8, 42, true);
            }
            let plan = planner.plan(&p, &r);
            assert_eq!(plan.decision.mode, Mode::Enforce, "{name}: one file");
        }
        let mut other = record(9, "/usr/bin/ncat", 9);
        if let Body::Exec(exec) = &mut other.body {
            (exec.dev, exec.ino, exec.killed) = (8, 43, true);
        }
        let blown = planner.plan(&p, &other);
        assert!(blown.fuse_blew);
        let note = blown.decision.note.unwrap_or_default();
        assert!(note.contains("already killed"), "{note}");
    }
}

//! Carrying out what the engine planned: revert, kill, block, run, and the
//! alert every reported decision becomes (handed to the sinks).
pub mod evidence;
pub mod kill;
mod parked;
pub mod revert;
pub mod run;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::SystemTime};

use tokio::sync::{mpsc, watch};

use crate::{
    engine::{
        Judged,
        plan::{Decision, Plan},
    },
    events::{Body, Record},
    lanes::{LaneReceiver, Taken},
    limits::{self, Fit},
    logging::error_chain,
    policy::{
        Action, Policy,
        spec::{KillTarget, Severity},
    },
    settle::Followup,
    sinks::alert::{ActionResult, Alert, AlertLog, DEFAULT_MAX_LINE_BYTES, Evidence},
    telemetry::{
        Metrics,
        alive::{Stage, beat_interval},
    },
};
use evidence::{EvidenceSettings, EvidenceStore};
use run::HookRunner;

/// Carries out decisions. Owned by the actions task.
pub struct Executor {
    hooks: HookRunner,
    alerts: AlertLog,
    metrics: Metrics,
    state_dir: Option<PathBuf>,
    followups: Option<mpsc::UnboundedSender<Followup>>,
    reopen: Option<watch::Receiver<u64>>,
    stdin_max_bytes: usize,
    evidence: Option<Arc<EvidenceStore>>,
    /// Where reverts run; inline on this task without one (tests).
    pool: Option<crate::fsio::pool::FsPool>,
    reverted_tx: mpsc::UnboundedSender<parked::RevertDone>,
    reverted_rx: Option<mpsc::UnboundedReceiver<parked::RevertDone>>,
    /// Verdicts waiting for their reverts, by ticket.
    parked: HashMap<u64, parked::Parked>,
    next_ticket: u64,
}

impl Executor {
    /// An executor writing alerts to `alerts` and starting hooks with `hooks`.
    pub fn new(alerts: AlertLog, hooks: HookRunner, metrics: Metrics) -> Self {
        let (reverted_tx, reverted_rx) = mpsc::unbounded_channel();
        Self {
            hooks,
            alerts,
            metrics,
            state_dir: None,
            followups: None,
            reopen: None,
            stdin_max_bytes: DEFAULT_MAX_LINE_BYTES,
            evidence: None,
            pool: None,
            reverted_tx,
            reverted_rx: Some(reverted_rx),
            parked: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// Runs reverts on `pool`: this stage goes on with other events while
    /// one runs, and writes its alert when it is done or timed out.
    pub fn with_pool(mut self, pool: crate::fsio::pool::FsPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Reopens the alert log each time `hangups` changes (SIGHUP).
    pub fn with_reopen(mut self, hangups: watch::Receiver<u64>) -> Self {
        self.reopen = Some(hangups);
        self
    }

    /// A hook's stdin (the event as JSON) is cut to `max` bytes, like an
    /// alert line.
    pub fn with_stdin_bound(mut self, max: usize) -> Self {
        self.stdin_max_bytes = max;
        self
    }

    /// Lets `revert` restore from the baseline store under `state_dir`,
    /// telling the settler of each restored file on `followups`.
    pub fn with_reverts(
        mut self,
        state_dir: PathBuf,
        followups: mpsc::UnboundedSender<Followup>,
    ) -> Self {
        self.evidence = Some(Arc::new(
            EvidenceStore::new(&state_dir, EvidenceSettings::default())
                .with_metrics(self.metrics.evidence_dropped.clone()),
        ));
        self.state_dir = Some(state_dir);
        self.followups = Some(followups);
        self
    }

    /// Keeps the evidence of reverts within `settings` (after `with_reverts`).
    pub fn with_evidence(mut self, settings: EvidenceSettings) -> Self {
        if let Some(state_dir) = &self.state_dir {
            self.evidence = Some(Arc::new(
                EvidenceStore::new(state_dir, settings)
                    .with_metrics(self.metrics.evidence_dropped.clone()),
            ));
        }
        self
    }

    /// Carries out everything the engine sends until both lanes close:
    /// the file lane first ([`crate::lanes`]), so a revert never waits
    /// behind a backlog of alerts; at most one bulk item (its alert
    /// written, a remote sink's copy spooled for its own task) runs ahead
    /// of it.
    pub async fn run(mut self, mut input: LaneReceiver<Judged>) {
        let mut reopen = self.reopen.take();
        let mut reverted = self.reverted_rx.take();
        let beat = self.metrics.alive.beat(Stage::Actions);
        let mut idle = beat_interval();
        loop {
            beat.mark();
            tokio::select! {
                biased;
                Some(done) = async {
                    match reverted.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.reverted(done),
                Ok(()) = async {
                    match reopen.as_mut() {
                        Some(r) => r.changed().await,
                        None => std::future::pending().await,
                    }
                } => self.alerts.reopen(),
                judged = input.recv::<()>(None) => match judged {
                    Some(Taken::File(judged) | Taken::Bulk(judged, _)) => self.handle(judged),
                    None => return,
                },
                _ = idle.tick() => {}
            }
        }
    }

    /// Carries out the verdicts on one event, in order.
    pub fn handle(&mut self, judged: Judged) {
        let Judged { record, verdicts } = judged;
        let record = &record;
        let event = template_context(record);
        for verdict in verdicts {
            let (policy, plan) = (&verdict.policy, verdict.plan);
            let context = with_policy(&event, &plan.decision);
            let mut evidence = None;
            let mut waiting = Vec::new();
            let mut results = Vec::with_capacity(plan.steps.len());
            for &i in &plan.steps {
                let action = &policy.actions[i];
                if let Some(job) = self.revert_job(policy, action, record) {
                    waiting.push((results.len(), job));
                    results.push(ActionResult {
                        action: action.name().to_string(),
                        ok: false,
                        detail: String::new(),
                    });
                    continue;
                }
                results.push(self.carry_out(policy, action, record, &context, &mut evidence));
            }
            tracing::info!(
                policy = policy.name,
                mode = plan.decision.mode.as_str(),
                pid = record.process.pid,
                exe = record.process.exe.as_deref().unwrap_or(""),
                actions = ?plan.decision.actions,
                would = ?plan.decision.would,
                "policy matched"
            );
            let parked = parked::Parked {
                policy: policy.clone(),
                record: record.clone(),
                context,
                plan,
                results,
                evidence,
                waiting: waiting.len(),
            };
            if waiting.is_empty() {
                self.finish(parked);
            } else {
                self.park(parked, waiting);
            }
        }
    }

    /// Writes the alert of a verdict whose actions are all done.
    fn finish(&mut self, parked: parked::Parked) {
        let parked::Parked {
            policy,
            record,
            context,
            plan,
            results,
            evidence,
            ..
        } = parked;
        if plan.report {
            let mut alert = build_alert(&policy, &record, &context, plan, results);
            alert.evidence = evidence;
            self.metrics
                .actions
                .with_label_values(&["alert", "ok"])
                .inc();
            self.alerts.write(&alert);
        }
    }

    fn carry_out(
        &mut self,
        policy: &Policy,
        action: &Action,
        record: &Record,
        context: &serde_json::Value,
        evidence: &mut Option<Evidence>,
    ) -> ActionResult {
        let name = action.name();
        let file = match &record.body {
            Body::File(file) => Some(file),
            _ => None,
        };
        let result = match action {
            Action::Kill {
                target: KillTarget::Process,
                ..
            } if file.is_some_and(|f| f.killed) => Ok(format!(
                "pid {} killed in the kernel during the syscall",
                record.process.pid
            )),
            Action::Kill {
                target: KillTarget::Process,
                ..
            } if matches!(&record.body, Body::Exec(e) if e.killed) => Ok(format!(
                "pid {} killed in the kernel at exec, before it ran",
                record.process.pid
            )),
            Action::Kill {
                signal,
                target: KillTarget::Process,
            } => {
                let pid = record.process.pid;
                kill::kill(pid, record.ktime_ns, *signal)
                    .map(|()| format!("sent {signal} to pid {pid}"))
                    .map_err(|e| error_chain(&e))
            }
            // The parent now, not the one the event named: it may have
            // been reparented since.
            Action::Kill {
                signal,
                target: KillTarget::Parent,
            } => kill::kill_parent(record.process.pid, record.ktime_ns, *signal)
                .map(|ppid| {
                    format!(
                        "sent {signal} to pid {ppid}, the parent of pid {}",
                        record.process.pid
                    )
                })
                .map_err(|e| error_chain(&e)),
            Action::Run { command, timeout } => {
                let argv: Vec<String> = command.iter().map(|t| t.render(context)).collect();
                let stdin = self.hook_stdin(record);
                self.hooks
                    .start(&policy.name, argv, stdin, *timeout)
                    .map(|pid| format!("started hook pid {pid}"))
                    .map_err(|e| error_chain(&e))
            }
            Action::Revert { .. } => match (&self.state_dir, file) {
                (Some(state_dir), Some(file)) => {
                    let (done, kept) = parked::revert_and_follow_up(
                        policy,
                        file,
                        state_dir,
                        self.evidence.as_deref(),
                        self.followups.as_ref(),
                    );
                    *evidence = kept;
                    done
                }
                (None, _) => Err("the file sensor is not running".to_string()),
                (_, None) => Err("the event is not a file change".to_string()),
            },
            Action::Block => match &record.body {
                Body::Connect(c) if c.blocked && c.datagram => Ok(format!(
                    "refused in the kernel: datagrams to {}:{} fail with EPERM{}",
                    c.remote_addr,
                    c.remote_port,
                    match c.suppressed {
                        0 => String::new(),
                        n => format!(" ({n} more refused since the last report)"),
                    }
                )),
                Body::Connect(c) if c.blocked => Ok(format!(
                    "refused in the kernel: connect to {}:{} failed with EPERM",
                    c.remote_addr, c.remote_port
                )),
                Body::Connect(_) => Err(
                    "not refused: only outbound connects and datagrams can be blocked, and only while the cgroup hooks are attached"
                        .to_string(),
                ),
                _ => Err("the event is not a connection".to_string()),
            },
            Action::Alert { .. } => Ok(String::new()),
        };
        self.account(policy, name, record, result)
    }

    /// Counts an action's result and its latency, logs a failure, and
    /// makes it what the alert reports.
    fn account(
        &self,
        policy: &Policy,
        name: &str,
        record: &Record,
        result: Result<String, String>,
    ) -> ActionResult {
        let ok = result.is_ok();
        self.metrics
            .actions
            .with_label_values(&[name, if ok { "ok" } else { "error" }])
            .inc();
        let elapsed_ns = crate::events::clock::BootClock::now_ns().saturating_sub(record.ktime_ns);
        self.metrics
            .action_latency
            .with_label_values(&[name])
            .observe(elapsed_ns as f64 / 1e9);
        if let Err(detail) = &result {
            tracing::warn!(policy = policy.name, action = name, detail, "action failed");
        }
        ActionResult {
            action: name.to_string(),
            ok,
            detail: result.unwrap_or_else(|e| e),
        }
    }
}

impl Executor {
    /// The event as JSON for a hook's stdin, cut to the line bound.
    fn hook_stdin(&self, record: &Record) -> Vec<u8> {
        let mut value = serde_json::to_value(record).unwrap_or_default();
        let fit = limits::fit(&mut value, self.stdin_max_bytes);
        if fit != Fit::Whole {
            self.metrics.limits.truncated("hook_stdin").inc();
        }
        if fit == Fit::Over {
            value = serde_json::json!({
                "time": record.time,
                "ktime_ns": record.ktime_ns,
                "kind": record.kind,
                "process": {"pid": record.process.pid, "ppid": record.process.ppid, "uid": record.process.uid},
                "truncated": true,
            });
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// The event as templates see it, without `policy`.
fn template_context(record: &Record) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or(serde_json::Value::Null)
}

/// The event plus `policy` (`{policy.name}`, `{policy.mode}`), as alert
/// summaries and `run` arguments see it.
fn with_policy(event: &serde_json::Value, decision: &Decision) -> serde_json::Value {
    let mut context = event.clone();
    if let Some(object) = context.as_object_mut() {
        object.insert(
            "policy".into(),
            serde_json::json!({"name": decision.policy, "mode": decision.mode}),
        );
    }
    context
}

fn build_alert(
    policy: &Policy,
    record: &Record,
    context: &serde_json::Value,
    plan: Plan,
    results: Vec<ActionResult>,
) -> Alert {
    let spec = policy.actions.iter().find_map(|a| match a {
        Action::Alert { severity, summary } => Some((*severity, summary.as_ref())),
        _ => None,
    });
    let severity = match (&plan.decision.note, spec) {
        (Some(_), _) => Severity::Critical,
        (None, Some((severity, _))) => severity,
        (None, None) => Severity::Warning,
    };
    let summary = spec
        .and_then(|(_, s)| s)
        .map(|t| t.render(context))
        .unwrap_or_else(|| {
            format!(
                "{}: {} by {} (pid {})",
                policy.name,
                record.kind.as_str(),
                record
                    .process
                    .exe
                    .as_deref()
                    .unwrap_or(&record.process.comm),
                record.process.pid
            )
        });
    Alert {
        time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        decision: plan.decision,
        severity,
        summary,
        labels: policy.labels.clone(),
        results,
        event: record.clone(),
        evidence: None,
    }
}

#[cfg(test)]
mod lanes_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, value::Scalar as _, value::Template};

    #[test]
    fn run_arguments_render_the_policy_like_summaries() {
        let record = Record {
            time: String::new(),
            ktime_ns: 1,
            kind: crate::events::Kind::Exec,
            process: crate::events::ProcessContext {
                pid: 42,
                ..Default::default()
            },
            body: Body::Exit(crate::events::Exit::from_raw(0)),
        };
        let decision = Decision {
            policy: "no-nc".into(),
            mode: Mode::Monitor,
            actions: vec![],
            would: vec![],
            suppressed: 0,
            note: None,
        };
        let context = with_policy(&template_context(&record), &decision);
        let argument =
            Template::parse("--policy={policy.name}:{policy.mode}:{process.pid}").unwrap();
        assert_eq!(argument.render(&context), "--policy=no-nc:monitor:42");
    }
}

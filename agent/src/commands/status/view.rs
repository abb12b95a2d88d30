//! The text of `reflex status`, drawn from two reads of `/metrics` and the
//! last alerts: what an operator checks first, one topic per line.
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::scrape::Samples;
use crate::commands::compact::{self, Paint};

/// Families whose events the kernel sends, in the order shown.
const FAMILIES: [&str; 3] = ["exec", "file", "connect"];
/// Width of the topic column.
const TOPIC: usize = 11;

/// Everything one drawing needs.
pub struct View<'a> {
    /// Where `/metrics` was read.
    pub addr: std::net::SocketAddr,
    /// The read before `now` and the time between them, for rates.
    pub before: Option<(&'a Samples, Duration)>,
    /// The latest read.
    pub now: &'a Samples,
    /// The last alerts, oldest first.
    pub alerts: &'a [serde_json::Value],
    /// Why the alert log could not be read, if it could not.
    pub unread: Option<&'a str>,
    /// Colours on or off.
    pub paint: Paint,
}

impl View<'_> {
    /// The whole view, lines ending in `\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = self.now;
        let version = s
            .named("reflex_build_info")
            .next()
            .map_or("?", |b| b.label("version"));
        let _ = writeln!(
            out,
            "{} at {}",
            self.paint.paint("1", &format!("reflex {version}")),
            self.addr
        );
        let ok = s.sum("reflex_policy_reloads_total", &[("result", "ok")]);
        let rejected = s.sum("reflex_policy_reloads_total", &[("result", "rejected")]);
        let mut policies = format!(
            "{} loaded, revision {} ({ok} reloads ok, {rejected} rejected)",
            s.sum("reflex_policies_loaded", &[]),
            ok + 1.0
        );
        if rejected > 0.0 {
            policies = self.paint.paint("33", &policies);
        }
        self.line(&mut out, "policies", &policies);
        let attached: Vec<&str> = s
            .named("reflex_probe_attached")
            .filter(|p| p.value > 0.0)
            // `tracepoint/sched/sched_process_exec`, `cgroup/connect4@/sys/fs/...`:
            // the hook's own name says enough on one line.
            .map(|p| {
                let probe = p.label("probe");
                let hook = probe.split('@').next().unwrap_or(probe);
                hook.rsplit('/').next().unwrap_or(hook)
            })
            .collect();
        let probes = if attached.is_empty() {
            self.paint
                .paint("1;31", "NONE attached: the agent sees nothing")
        } else {
            format!("{} attached: {}", attached.len(), attached.join(" "))
        };
        self.line(&mut out, "probes", &probes);
        self.line(&mut out, "events/s", &self.events());
        self.line(&mut out, "losses", &self.losses());
        self.line(&mut out, "actions", &self.actions());
        let blown: Vec<String> = s
            .named("reflex_kill_fuse_blown_total")
            .filter(|f| f.value > 0.0)
            .map(|f| f.label("policy").to_string())
            .collect();
        if !blown.is_empty() {
            let text = format!("blown: {} (kills off until reload)", blown.join(", "));
            self.line(&mut out, "kill fuse", &self.paint.paint("1;31", &text));
        }
        let down: Vec<&str> = s
            .named("reflex_component_up")
            .filter(|c| c.value == 0.0)
            .map(|c| c.label("component"))
            .collect();
        let components = if down.is_empty() {
            "all up".to_string()
        } else {
            self.paint
                .paint("1;31", &format!("down: {}", down.join(", ")))
        };
        self.line(&mut out, "components", &components);
        self.line(&mut out, "sinks", &self.sinks());
        let rss = s.sum("process_resident_memory_bytes", &[]) / f64::from(1 << 20);
        let cpu = self
            .rate("process_cpu_seconds_total", &[])
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0));
        self.line(&mut out, "agent", &format!("RSS {rss:.1} MiB, CPU {cpu}"));
        let _ = writeln!(out, "last decisions");
        if let Some(why) = self.unread {
            let _ = writeln!(out, "  {}", self.paint.paint("33", why));
        } else if self.alerts.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for alert in self.alerts {
            let _ = writeln!(out, "  {}", compact::decision_line(alert, self.paint));
        }
        out
    }

    fn line(&self, out: &mut String, topic: &str, text: &str) {
        let _ = writeln!(out, "{topic:<TOPIC$} {text}");
    }

    /// Increase per second of `name` (with `with`) since the read before.
    fn rate(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let (before, dt) = self.before?;
        let delta = self.now.sum(name, with) - before.sum(name, with);
        (dt.as_secs_f64() > 0.0).then(|| delta.max(0.0) / dt.as_secs_f64())
    }

    fn events(&self) -> String {
        let parts: Vec<String> = FAMILIES
            .iter()
            .map(|family| {
                let with = [("family", *family)];
                match self.rate("reflex_events_total", &with) {
                    Some(rate) => format!("{family} {rate:.1}"),
                    None => format!(
                        "{family} {} in all",
                        self.now.sum("reflex_events_total", &with)
                    ),
                }
            })
            .collect();
        parts.join("   ")
    }

    fn losses(&self) -> String {
        let mut lost: BTreeMap<String, f64> = BTreeMap::new();
        for s in self.now.named("reflex_events_lost_total") {
            if s.value > 0.0 {
                let key = format!(
                    "{} {}/{}",
                    s.label("family"),
                    s.label("place"),
                    s.label("reason")
                );
                *lost.entry(key).or_default() += s.value;
            }
        }
        if lost.is_empty() {
            return "none".to_string();
        }
        let text: Vec<String> = lost.iter().map(|(k, v)| format!("{k} {v}")).collect();
        self.paint.paint("1;31", &text.join(", "))
    }

    fn actions(&self) -> String {
        let mut per: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for s in self.now.named("reflex_actions_total") {
            let entry = per.entry(s.label("action")).or_default();
            if s.label("result") == "error" {
                entry.1 += s.value;
            } else {
                entry.0 += s.value;
            }
        }
        if per.is_empty() {
            return "none yet".to_string();
        }
        let parts: Vec<String> = per
            .iter()
            .map(|(action, (ok, errors))| {
                if *errors > 0.0 {
                    let failed = self.paint.paint("1;31", &format!("{errors} failed"));
                    format!("{action} {ok} ok {failed}")
                } else {
                    format!("{action} {ok} ok")
                }
            })
            .collect();
        parts.join(", ")
    }

    fn sinks(&self) -> String {
        let s = self.now;
        let up = |name: &str| {
            s.named("reflex_component_up")
                .find(|c| c.label("component") == name)
                .map(|c| c.value > 0.0)
        };
        let mut parts = vec![match up("alert_log") {
            Some(false) => self.paint.paint("1;31", "alert_log down"),
            _ => "alert_log up".to_string(),
        }];
        for sink in s.by("reflex_alert_queue_depth", "sink").keys() {
            let with = [("sink", sink.as_str())];
            let state = match up(&format!("sink/{sink}")) {
                Some(false) => self.paint.paint("1;31", "down"),
                _ => "up".to_string(),
            };
            parts.push(format!(
                "{sink} {state}: queue {}, spool {}, delivered {}, failed {}, dropped {}",
                s.sum("reflex_alert_queue_depth", &with),
                s.sum("reflex_alert_spool_entries", &with),
                s.sum(
                    "reflex_alert_deliveries_total",
                    &[("sink", sink), ("result", "ok")]
                ),
                s.sum(
                    "reflex_alert_deliveries_total",
                    &[("sink", sink), ("result", "error")]
                ),
                s.sum("reflex_alerts_dropped_total", &with),
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "reflex_build_info{version=\"0.1.0\"} 1\n\
        reflex_policies_loaded 2\n\
        reflex_policy_reloads_total{result=\"ok\"} 1\n\
        reflex_policy_reloads_total{result=\"rejected\"} 0\n\
        reflex_probe_attached{probe=\"tracepoint/sched/sched_process_exec\"} 1\n\
        reflex_events_total{family=\"exec\",kind=\"exec\"} 10\n\
        reflex_events_lost_total{place=\"kernel\",reason=\"ringbuf_full\",family=\"file\"} 0\n\
        reflex_actions_total{action=\"revert\",result=\"ok\"} 2\n\
        reflex_component_up{component=\"sink/ops\"} 0\n\
        reflex_alert_queue_depth{sink=\"ops\"} 0\n\
        reflex_alert_spool_entries{sink=\"ops\"} 3\n";

    #[test]
    fn the_view_shows_rates_losses_actions_and_sinks() {
        let before = Samples::parse(ONE);
        let now = Samples::parse(&ONE.replace("\"exec\"} 10", "\"exec\"} 30").replace(
            "ringbuf_full\",family=\"file\"} 0",
            "ringbuf_full\",family=\"file\"} 4",
        ));
        let alerts = [
            serde_json::json!({"policy": "p", "mode": "enforce", "results": [{"action": "revert", "ok": true}]}),
        ];
        let view = View {
            addr: "127.0.0.1:9807".parse().unwrap(),
            before: Some((&before, Duration::from_secs(2))),
            now: &now,
            alerts: &alerts,
            unread: None,
            paint: Paint(false),
        }
        .render();
        for expected in [
            "reflex 0.1.0 at 127.0.0.1:9807",
            "policies    2 loaded, revision 2 (1 reloads ok, 0 rejected)",
            "probes      1 attached: sched_process_exec",
            "events/s    exec 10.0   file 0.0   connect 0.0",
            "losses      file kernel/ringbuf_full 4",
            "actions     revert 2 ok",
            "components  down: sink/ops",
            "ops down: queue 0, spool 3",
            "p (enforce) revert",
        ] {
            assert!(view.contains(expected), "{expected:?} not in\n{view}");
        }
    }
}

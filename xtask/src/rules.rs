//! The Prometheus alerting rules shipped in `deploy/prometheus/`: checked
//! and unit-tested with promtool, and every rule covered by a test where it
//! fires and one where it stays quiet.
use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::cmd;

/// The rules file, relative to the workspace root.
pub const RULES: &str = "deploy/prometheus/reflex-rules.yml";
/// Its promtool unit tests, beside it.
pub const TESTS: &str = "deploy/prometheus/reflex-rules.test.yml";

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    #[serde(rename = "for")]
    hold: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TestFile {
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml::Value>,
}

/// `promtool check rules`, `promtool test rules`, then the coverage check.
pub fn run(root: &Path) -> Result<()> {
    cmd::status(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(root.join(RULES)),
    )?;
    cmd::status(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(root.join(TESTS)),
    )?;
    let rules = read(&root.join(RULES))?;
    let tests = read(&root.join(TESTS))?;
    let gaps = gaps(&rules, &tests)?;
    if !gaps.is_empty() {
        bail!("{RULES}: {}", gaps.join("; "));
    }
    eprintln!(
        "xtask: rules: every alert has for:, severity, summary, description, and is tested firing and quiet"
    );
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// What the rules lack: a `for:`, a severity, a summary or description,
/// or a test where the alert fires and one where it does not.
fn gaps(rules: &str, tests: &str) -> Result<Vec<String>> {
    let rules: RuleFile = serde_yaml::from_str(rules).context("parsing the rules")?;
    let tests: TestFile = serde_yaml::from_str(tests).context("parsing the rule tests")?;
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests.tests.iter().flat_map(|g| &g.alert_rule_test) {
        if test.exp_alerts.is_empty() {
            quiet.insert(test.alertname.as_str());
        } else {
            firing.insert(test.alertname.as_str());
        }
    }
    let mut gaps = Vec::new();
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        let Some(name) = &rule.alert else { continue };
        if rule.hold.is_none() {
            gaps.push(format!("{name} has no for:"));
        }
        if !rule.labels.contains_key("severity") {
            gaps.push(format!("{name} has no severity"));
        }
        for key in ["summary", "description"] {
            if !rule.annotations.contains_key(key) {
                gaps.push(format!("{name} has no {key}"));
            }
        }
        if !firing.contains(name.as_str()) {
            gaps.push(format!("{name} is never tested firing"));
        }
        if !quiet.contains(name.as_str()) {
            gaps.push(format!("{name} is never tested quiet"));
        }
    }
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 0\n        for: 1m\n        labels: { severity: warning }\n        annotations: { summary: s, description: d }\n";

    #[test]
    fn an_alert_tested_only_firing_is_a_gap() {
        let tests = "tests:\n  - alert_rule_test:\n      - { alertname: A, eval_time: 1m, exp_alerts: [{ exp_labels: { severity: warning } }] }\n";
        assert_eq!(gaps(RULE, tests).unwrap(), ["A is never tested quiet"]);
        let both = format!("{tests}      - {{ alertname: A, eval_time: 0m, exp_alerts: [] }}\n");
        assert!(gaps(RULE, &both).unwrap().is_empty());
    }

    #[test]
    fn the_shipped_rules_have_no_gaps() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let gaps = gaps(
            &read(&root.join(RULES)).unwrap(),
            &read(&root.join(TESTS)).unwrap(),
        )
        .unwrap();
        assert!(gaps.is_empty(), "{gaps:?}");
    }
}

//! Actions take the file lane first: a revert's verdict is carried out
//! before a backlog of alerts queued ahead of it.
use super::*;
use crate::{
    engine::{Verdict, plan::Planner},
    events::{Exec, Kind, ProcessContext},
    lanes,
    policy::compile_valid,
    sinks::alert::LogBounds,
};

fn judged(policy: &crate::policy::PolicyRef, pid: u32) -> Judged {
    let record = Record {
        time: String::new(),
        ktime_ns: u64::from(pid),
        kind: Kind::Exec,
        process: ProcessContext {
            pid,
            ..ProcessContext::default()
        },
        body: Body::Exec(Exec::default()),
    };
    let plan = Planner::new(5).plan(policy, &record);
    Judged {
        record,
        verdicts: vec![Verdict {
            policy: policy.clone(),
            plan,
        }],
    }
}

#[tokio::test]
async fn a_file_verdict_is_carried_out_before_a_backlog_of_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(
        compile_valid("name: every-exec\nmode: monitor\non: { exec: {} }\ndo: [alert]\n").remove(0),
    );
    let metrics = Metrics::new();
    let alerts = AlertLog::open(dir.path(), false, LogBounds::default());
    let executor = Executor::new(alerts, HookRunner::new(Default::default()), metrics);
    let (tx, rx) = lanes::channel(16, 1000);
    for pid in 1..=500 {
        tx.bulk.try_send(judged(&policy, pid)).unwrap();
    }
    tx.file.try_send(judged(&policy, 999)).unwrap();
    drop(tx);
    executor.run(rx).await;
    let log = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    let pids: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["process"]["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(pids.len(), 501, "every verdict was carried out");
    assert_eq!(pids[0], 999, "the file lane's verdict came first");
}

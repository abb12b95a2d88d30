use super::*;
use crate::{
    events::{Body, Exec, Kind, ProcessContext, Record},
    lanes,
    policy::compile_valid,
};

fn set() -> Arc<PolicySet> {
    Arc::new(PolicySet::new(compile_valid(
        "name: every-exec\nmode: monitor\non: { exec: {} }\ndo: [alert]\n",
    )))
}

fn exec(pid: u32) -> Record {
    Record {
        time: String::new(),
        ktime_ns: u64::from(pid),
        kind: Kind::Exec,
        process: ProcessContext {
            pid,
            exe: Some("/usr/bin/true".into()),
            ..ProcessContext::default()
        },
        body: Body::Exec(Exec {
            filename: "/usr/bin/true".into(),
            ..Exec::default()
        }),
    }
}

#[test]
fn a_set_is_new_once_whichever_lane_brings_it_first() {
    let (s0, s1, s2, s3) = (set(), set(), set(), set());
    let mut sets = LaneSets::new(s0.clone());
    assert!(!sets.bring(Lane::File, s0.clone()));
    assert!(sets.bring(Lane::File, s1.clone()));
    assert!(sets.bring(Lane::File, s2.clone()));
    assert!(sets.bring(Lane::File, s3.clone()));
    // The bulk lane catches up: nothing is new any more, each lane judges
    // by its own set meanwhile.
    assert!(!sets.bring(Lane::Bulk, s1.clone()));
    assert!(Arc::ptr_eq(sets.current(Lane::Bulk), &s1));
    assert!(Arc::ptr_eq(sets.current(Lane::File), &s3));
    assert!(!sets.bring(Lane::Bulk, s2));
    assert!(!sets.bring(Lane::Bulk, s3.clone()));
    assert_eq!(sets.ahead.len(), 1, "passed sets are not kept");
    // And the other way round.
    let s4 = set();
    assert!(sets.bring(Lane::Bulk, s4.clone()));
    assert!(!sets.bring(Lane::File, s4));
    assert_eq!(sets.ahead.len(), 1);
}

#[tokio::test]
async fn a_file_event_is_judged_before_a_bulk_backlog_drains() {
    let set = set();
    let (tx, rx) = lanes::channel(16, 200);
    let (file_tx, mut file_out) = tokio::sync::mpsc::channel::<Judged>(16);
    let (bulk_tx, bulk_out) = tokio::sync::mpsc::channel::<Judged>(4);
    let out = LaneSenders {
        file: file_tx,
        bulk: bulk_tx,
    };
    for lane in Lane::ALL {
        tx.lane(lane)
            .try_send(Settled::Policies(set.clone()))
            .unwrap();
    }
    for pid in 1..=100 {
        tx.bulk.try_send(Settled::Event(exec(pid))).unwrap();
    }
    let engine = Engine::new(set, 5, None);
    let task = tokio::spawn(engine.run(rx, out));
    // Actions are stuck on alerts: the bulk lane out fills up.
    while bulk_out.len() < 4 {
        tokio::task::yield_now().await;
    }
    tx.file.send(Settled::Event(exec(999))).await.unwrap();
    // An upper bound so that a stage holding files behind bulk fails here
    // instead of hanging; a correct one answers at once.
    let judged = tokio::time::timeout(std::time::Duration::from_secs(60), file_out.recv())
        .await
        .expect("the file event was judged while the bulk lane was stuck")
        .expect("judged in the file lane");
    assert_eq!(judged.record.process.pid, 999);
    let backlog = tx.bulk.max_capacity() - tx.bulk.capacity();
    assert!(
        backlog >= 90,
        "the bulk backlog was drained first: {backlog} left"
    );
    task.abort();
}

//! The settler's task serves the file lane while the bulk lane is stuck.
use std::{fs, sync::Arc};

use tokio::sync::{mpsc, watch};

use super::{Settled, Settler, file::FileSettler};
use crate::{
    events::{
        Body, Exec, Kind, ProcessContext, Record,
        file::{File, FileChange, MatchedBy},
    },
    fsio, lanes,
    lanes::LaneSenders,
    policy::{PolicySet, compile_valid},
};

fn record(kind: Kind, pid: u32, body: Body) -> Record {
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind,
        process: ProcessContext {
            pid,
            ..ProcessContext::default()
        },
        body,
    }
}

#[tokio::test]
async fn a_file_change_settles_while_the_bulk_lane_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.conf");
    fs::write(&path, "good\n").unwrap();
    let set = Arc::new(PolicySet::new(compile_valid(&format!(
        "name: managed\nmode: enforce\non: {{ file: {{ paths: [\"{}\"] }} }}\ndo: [revert]\n",
        path.display()
    ))));
    let (settler, drift) = Settler::new(FileSettler::new(None, None), None, set.clone());
    let (_set_tx, set_rx) = watch::channel(set);
    let (_followup_tx, followup_rx) = mpsc::unbounded_channel();
    let (tx, rx) = lanes::channel(16, 1000);
    for pid in 1..=500 {
        let exec = Body::Exec(Exec::default());
        tx.bulk.try_send(record(Kind::Exec, pid, exec)).unwrap();
    }
    let (file_tx, mut file_out) = mpsc::channel(16);
    // The engine takes nothing from the bulk lane: it stays full.
    let (bulk_tx, bulk_out) = mpsc::channel(4);
    let out = LaneSenders {
        file: file_tx,
        bulk: bulk_tx,
    };
    let task = tokio::spawn(settler.run(drift, rx, set_rx, followup_rx, out));
    while bulk_out.len() < bulk_out.max_capacity() {
        tokio::task::yield_now().await;
    }
    fs::write(&path, "evil\n").unwrap();
    let key = fsio::state(&path).unwrap().expect("a regular file").key;
    let change = Body::File(File {
        change: Some(FileChange::CloseWrite),
        dev: key.dev,
        ino: key.ino,
        fd: 3,
        matched_by: MatchedBy::Inode,
        ..File::default()
    });
    tx.file.send(record(Kind::File, 7, change)).await.unwrap();
    let settled = async {
        loop {
            match file_out.recv().await {
                Some(Settled::Event(event)) => return event,
                Some(Settled::Policies(_)) => continue,
                None => panic!("the settler stopped"),
            }
        }
    };
    // An upper bound so that a stage holding files behind bulk fails here
    // instead of hanging; a correct one answers at once.
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), settled)
        .await
        .expect("the change settled while the bulk lane was stuck");
    let Body::File(file) = &event.body else {
        panic!("not a file event: {event:?}")
    };
    assert_eq!(file.path.as_deref(), Some(path.to_str().unwrap()));
    let backlog = tx.bulk.max_capacity() - tx.bulk.capacity();
    assert!(
        backlog >= 490,
        "the bulk backlog went first: {backlog} left"
    );
    task.abort();
}

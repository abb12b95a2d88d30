use super::*;

#[tokio::test]
async fn a_file_item_overtakes_a_bulk_backlog() {
    let (tx, mut rx) = channel::<u32>(8, 1000);
    for i in 0..1000 {
        tx.bulk.try_send(i).unwrap();
    }
    tx.file.try_send(7).unwrap();
    match rx.recv::<()>(None).await {
        Some(Taken::File(7)) => {}
        _ => panic!("the file item did not come first"),
    }
    assert_eq!(rx.waiting(Lane::Bulk), 1000, "the backlog is untouched");
}

#[tokio::test]
async fn the_bulk_lane_gets_a_turn_after_a_burst() {
    let (tx, mut rx) = channel::<u32>(1000, 8);
    for i in 0..(3 * FILE_BURST as u32) {
        tx.file.try_send(i).unwrap();
    }
    tx.bulk.try_send(1).unwrap();
    tx.bulk.try_send(2).unwrap();
    let mut order = Vec::new();
    for _ in 0..(2 * FILE_BURST + 3) {
        order.push(match rx.recv::<()>(None).await.unwrap() {
            Taken::File(_) => 'f',
            Taken::Bulk(..) => 'b',
        });
    }
    let bulk: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == 'b')
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bulk, [FILE_BURST, 2 * FILE_BURST + 1]);
}

#[tokio::test]
async fn a_full_bulk_lane_downstream_holds_bulk_items_but_not_files() {
    let (tx, mut rx) = channel::<u32>(8, 8);
    let (out, mut out_rx) = mpsc::channel::<u32>(1);
    out.try_send(0).unwrap(); // downstream full
    tx.bulk.try_send(1).unwrap();
    tx.file.try_send(2).unwrap();
    assert!(matches!(rx.recv(Some(&out)).await, Some(Taken::File(2))));
    // Only bulk is left, with no room: nothing comes until there is room.
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv(Some(&out))).await;
    assert!(waited.is_err(), "a bulk item was taken without room");
    assert_eq!(rx.waiting(Lane::Bulk), 1, "the waiting item was kept");
    out_rx.recv().await.unwrap();
    match rx.recv(Some(&out)).await {
        Some(Taken::Bulk(1, Some(permit))) => permit.send(1),
        _ => panic!("the bulk item did not come with room"),
    }
    assert_eq!(out_rx.recv().await, Some(1));
}

#[tokio::test]
async fn both_lanes_closed_end_the_stream_after_what_they_hold() {
    let (tx, mut rx) = channel::<u32>(8, 8);
    tx.bulk.try_send(1).unwrap();
    drop(tx);
    assert!(matches!(
        rx.recv::<()>(None).await,
        Some(Taken::Bulk(1, None))
    ));
    assert!(rx.recv::<()>(None).await.is_none());
}

#[test]
fn records_travel_by_family() {
    let mut record = Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::Exit,
        process: Default::default(),
        body: Body::Exit(crate::events::Exit::from_raw(0)),
    };
    assert_eq!(Lane::of(&record), Lane::Bulk);
    record.kind = Kind::File;
    record.body = Body::File(Default::default());
    assert_eq!(Lane::of(&record), Lane::File);
}

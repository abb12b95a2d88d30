use std::sync::mpsc;

use super::*;

fn key(path: &str, dev: u32) -> JobKey {
    JobKey {
        path: path.into(),
        dev,
    }
}

fn pool(threads: usize, timeout_ms: u64, max_stuck: usize) -> FsPool {
    FsPool::start(
        PoolSettings {
            threads,
            timeout: Duration::from_millis(timeout_ms),
            max_stuck,
            queue_max: 64,
        },
        PoolMetrics::unregistered(),
    )
}

/// A job that blocks until its gate is opened (a hung call), then says so.
fn hang(
    pool: &FsPool,
    key: JobKey,
    out: &mpsc::Sender<(String, Result<u32, PoolError>)>,
) -> mpsc::Sender<()> {
    let (open, gate) = mpsc::channel::<()>();
    let (started, is_running) = mpsc::channel();
    let out = out.clone();
    let name = key.path.clone();
    pool.submit(
        key,
        "settle",
        move || {
            started.send(()).unwrap();
            let _ = gate.recv();
            0
        },
        move |r| out.send((name, r)).unwrap(),
    );
    is_running.recv().unwrap();
    open
}

fn quick(
    pool: &FsPool,
    key: JobKey,
    value: u32,
    out: &mpsc::Sender<(String, Result<u32, PoolError>)>,
) {
    let out = out.clone();
    let name = key.path.clone();
    pool.submit(
        key,
        "revert",
        move || value,
        move |r| out.send((name, r)).unwrap(),
    );
}

#[test]
fn jobs_on_one_file_run_one_at_a_time_in_order_and_others_pass() {
    let pool = pool(2, 60_000, 4);
    let (tx, rx) = mpsc::channel();
    let open = hang(&pool, key("/a", 1), &tx);
    quick(&pool, key("/a", 1), 2, &tx);
    quick(&pool, key("/a", 1), 3, &tx);
    // Another file goes past the busy one on the second thread.
    quick(&pool, key("/b", 1), 9, &tx);
    assert_eq!(rx.recv().unwrap(), ("/b".into(), Ok(9)));
    open.send(()).unwrap();
    assert_eq!(rx.recv().unwrap(), ("/a".into(), Ok(0)));
    assert_eq!(rx.recv().unwrap(), ("/a".into(), Ok(2)));
    assert_eq!(rx.recv().unwrap(), ("/a".into(), Ok(3)));
    pool.stop();
}

#[test]
fn a_stuck_call_times_out_and_costs_one_thread_per_filesystem() {
    let metrics = PoolMetrics::unregistered();
    let pool = FsPool::start(
        PoolSettings {
            threads: 1,
            timeout: Duration::from_millis(200),
            max_stuck: 4,
            queue_max: 64,
        },
        metrics.clone(),
    );
    let (tx, rx) = mpsc::channel();
    let open = hang(&pool, key("/fuse/a", 7), &tx);
    let (path, result) = rx.recv().unwrap();
    assert_eq!(path, "/fuse/a");
    assert_eq!(result, Err(PoolError::TimedOut(Duration::from_millis(200))));
    assert_eq!(metrics.timeouts.with_label_values(&["settle"]).get(), 1);
    assert_eq!(metrics.stuck.get(), 1);
    // The same file, and another file on the same filesystem, fail at once.
    quick(&pool, key("/fuse/a", 7), 1, &tx);
    assert_eq!(
        rx.recv().unwrap(),
        ("/fuse/a".into(), Err(PoolError::Stuck))
    );
    quick(&pool, key("/fuse/b", 7), 1, &tx);
    assert_eq!(
        rx.recv().unwrap(),
        ("/fuse/b".into(), Err(PoolError::Stuck))
    );
    // Files elsewhere run on the thread that replaced the stuck one.
    quick(&pool, key("/tmp/c", 1), 5, &tx);
    assert_eq!(rx.recv().unwrap(), ("/tmp/c".into(), Ok(5)));
    // The hung call returns: its result is dropped (it was answered), the
    // file is usable again, and the extra thread goes.
    open.send(()).unwrap();
    let (tx2, rx2) = mpsc::channel();
    loop {
        quick(&pool, key("/fuse/a", 7), 6, &tx2);
        match rx2.recv().unwrap() {
            (_, Ok(6)) => break,
            (_, Err(PoolError::Stuck)) => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(metrics.stuck.get(), 0);
    assert!(rx.try_recv().is_err(), "a late result is never delivered");
    pool.stop();
}

#[test]
fn past_max_stuck_the_pool_shrinks_and_queued_jobs_time_out() {
    let pool = pool(1, 200, 0);
    let (tx, rx) = mpsc::channel();
    let open = hang(&pool, key("/fuse/a", 7), &tx);
    // Queued behind the only thread, which is about to be written off and
    // not replaced: answered at its own deadline, never lost.
    quick(&pool, key("/tmp/c", 1), 5, &tx);
    let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0].0, "/fuse/a");
    assert!(matches!(got[0].1, Err(PoolError::TimedOut(_))));
    assert_eq!(got[1].0, "/tmp/c");
    assert!(matches!(got[1].1, Err(PoolError::TimedOut(_))));
    // Once the call returns, the thread works again.
    open.send(()).unwrap();
    loop {
        quick(&pool, key("/tmp/c", 1), 8, &tx);
        match rx.recv().unwrap() {
            (_, Ok(8)) => break,
            (_, Err(PoolError::TimedOut(_))) => {}
            other => panic!("{other:?}"),
        }
    }
    pool.stop();
}

#[test]
fn a_full_queue_refuses_at_once() {
    let pool = FsPool::start(
        PoolSettings {
            threads: 1,
            timeout: Duration::from_secs(60),
            max_stuck: 1,
            queue_max: 1,
        },
        PoolMetrics::unregistered(),
    );
    let (tx, rx) = mpsc::channel();
    let open = hang(&pool, key("/a", 1), &tx);
    quick(&pool, key("/b", 1), 1, &tx);
    quick(&pool, key("/c", 1), 2, &tx);
    assert_eq!(rx.recv().unwrap(), ("/c".into(), Err(PoolError::Full)));
    open.send(()).unwrap();
    let mut rest: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rest, [("/a".into(), Ok(0)), ("/b".into(), Ok(1))]);
    pool.stop();
}

#[test]
fn a_job_that_panics_is_answered_and_its_file_freed() {
    let pool = pool(1, 60_000, 1);
    let (tx, rx) = mpsc::channel();
    let out = tx.clone();
    pool.submit(
        key("/a", 1),
        "settle",
        || -> u32 { panic!("a bug") },
        move |r| out.send(("/a".to_string(), r)).unwrap(),
    );
    assert_eq!(rx.recv().unwrap(), ("/a".into(), Err(PoolError::Panicked)));
    quick(&pool, key("/a", 1), 4, &tx);
    assert_eq!(rx.recv().unwrap(), ("/a".into(), Ok(4)));
    pool.stop();
}

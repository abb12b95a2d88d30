//! A burst of new files in a directory a glob covers costs the watch list
//! work in proportion to the files (counted, not timed), and the list
//! shrinks back when they are removed; driven without a kernel, on a
//! simulated clock.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use super::super::{FileSettler, watch::Work};
use crate::{
    events::{
        Body, Kind, ProcessContext, Record,
        file::{File, FileChange, MatchedBy},
    },
    fsio,
    policy::{PolicySet, compile, load},
};

fn monitor(dir: &Path) -> PolicySet {
    covering(&format!("{}/*.log", dir.display()))
}

/// A monitor policy on `glob`.
fn covering(glob: &str) -> PolicySet {
    let text = format!(
        "name: uploads\nmode: monitor\non: {{ file: {{ paths: [\"{glob}\"] }} }}\ndo: [alert]\n"
    );
    let (sources, mut errors) = load::parse_source(Path::new("t.yaml"), &text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    PolicySet::new(policies)
}

fn record(process: u32, file: File) -> Record {
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::File,
        process: ProcessContext {
            pid: process,
            ..ProcessContext::default()
        },
        body: Body::File(file),
    }
}

/// What the sensor makes of one file created in `dir`: the probes'
/// creating open, and fanotify's notice of a new entry in the directory.
fn creation(dir: &Path, name: &str) -> [Record; 2] {
    let meta = fs::metadata(dir).unwrap();
    let (dir_dev, dir_ino) = (fsio::encode_dev(meta.dev()), meta.ino());
    let open = File {
        change: Some(FileChange::Write),
        dir_dev,
        dir_ino,
        name: name.to_string(),
        open_flags: reflex_wire::file::open::O_CREAT | reflex_wire::file::open::O_WRONLY,
        fd: 3,
        matched_by: MatchedBy::Dir,
        ..File::default()
    };
    let entry = File {
        change: Some(FileChange::Attrib),
        dir_dev,
        dir_ino,
        fd: -1,
        matched_by: MatchedBy::Fanotify,
        ..File::default()
    };
    [record(7, open), record(7, entry)]
}

/// Creates `count` files at 10 000 a (simulated) second, feeding the
/// settler each one's records; returns the work it cost, the creations
/// reported, and the settler.
fn burst(count: usize) -> (Work, usize, FileSettler, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settler = FileSettler::new(None, None);
    settler.configure(&monitor(dir.path()));
    settler.watch.pretend_marked();
    let start = settler.watch.work();
    let mut now = Instant::now();
    let mut created = 0;
    let mut count_created = |records: Vec<Record>| {
        created += records
            .iter()
            .filter(|r| matches!(&r.body, Body::File(f) if f.changes.contains(&FileChange::Create)))
            .count();
    };
    for i in 0..count {
        let name = format!("f{i}.log");
        fs::write(dir.path().join(&name), "x").unwrap();
        for record in creation(dir.path(), &name) {
            count_created(settler.ingest(record, now));
        }
        now += Duration::from_micros(100);
    }
    count_created(settler.process_exited(7, now));
    count_created(settler.expire(now + Duration::from_secs(5)));
    let end = settler.watch.work();
    let work = Work {
        full_passes: end.full_passes - start.full_passes,
        entries: end.entries - start.entries,
        dir_scans: end.dir_scans - start.dir_scans,
    };
    (work, created, settler, dir)
}

#[test]
fn a_burst_of_new_files_costs_work_linear_in_the_files() {
    let (small, small_created, ..) = burst(1_000);
    let (large, large_created, ..) = burst(4_000);
    assert_eq!(small_created, 1_000, "every new file is reported");
    assert_eq!(large_created, 4_000, "every new file is reported");
    // Linear: a bounded number of entries looked at per new file, however
    // many there are (one look through the directory per new entry would
    // be about half the directory per file: 2 000 at 4 000 files).
    for (work, files) in [(small, 1_000), (large, 4_000)] {
        assert!(
            work.entries <= 40 * files,
            "more than 40 entries looked at per new file: {work:?} for {files}"
        );
    }
    assert!(
        large.dir_scans < 4_000 / 10,
        "the directory was looked through per notice: {large:?}"
    );
    assert!(large.full_passes <= 2, "passes over the list: {large:?}");
}

#[test]
fn removed_files_of_a_glob_are_forgotten() {
    let (_, _, mut settler, dir) = burst(200);
    assert_eq!(settler.watch.paths().count(), 200);
    let now = Instant::now() + Duration::from_secs(10);
    let mut settled = Vec::new();
    for i in 0..200 {
        let path = dir.path().join(format!("f{i}.log"));
        let key = fsio::state(&path).unwrap().unwrap().key;
        fs::remove_file(&path).unwrap();
        let unlink = File {
            change: Some(FileChange::Unlink),
            dev: key.dev,
            ino: key.ino,
            fd: -1,
            matched_by: MatchedBy::Inode,
            ..File::default()
        };
        settled.extend(settler.ingest(record(8, unlink), now));
    }
    settled.extend(settler.expire(now + Duration::from_secs(5)));
    assert_eq!(settled.len(), 200, "each removal is reported");
    assert_eq!(
        settler.watch.paths().count(),
        0,
        "the list shrinks back once its files are gone"
    );
    assert!(settler.watch.paths_named_like("f1.log").is_empty());
}

/// Feeds the settler turns until no directory waits for its look.
fn drain(settler: &mut FileSettler, mut now: Instant) {
    for _ in 0..10_000 {
        if settler.next_rescan().is_none() {
            return;
        }
        now += Duration::from_secs(2);
        settler.expire(now);
    }
    panic!("directories still wait for their look");
}

#[test]
fn covered_files_behind_the_scan_budget_are_all_taken_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut settler = FileSettler::new(None, None).with_max_scan(3);
    settler.configure(&monitor(dir.path()));
    settler.watch.pretend_marked();
    // Decoys no glob covers, then files that appeared without an open the
    // probes saw (renamed in): one notice for the lot.
    for i in 0..200 {
        fs::write(dir.path().join(format!("x{i}.txt")), "").unwrap();
    }
    for i in 0..10 {
        fs::write(dir.path().join(format!("evil{i}.log")), "").unwrap();
    }
    let [_, entry] = creation(dir.path(), "evil0.log");
    let now = Instant::now();
    settler.ingest(entry, now);
    drain(&mut settler, now);
    assert_eq!(
        settler.watch.paths().count(),
        10,
        "every covered file is watched, three per look"
    );
}

#[test]
fn a_notice_looks_at_its_own_directory_only() {
    const DIRS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..DIRS {
        fs::create_dir(dir.path().join(format!("d{i}"))).unwrap();
    }
    let mut settler = FileSettler::new(None, None);
    settler.configure(&covering(&format!("{}/**/*.log", dir.path().display())));
    settler.watch.pretend_marked();
    let start = settler.watch.work();
    let mut now = Instant::now();
    for i in 0..DIRS {
        let sub = dir.path().join(format!("d{i}"));
        fs::write(sub.join("a.txt"), "").unwrap();
        let [_, entry] = creation(&sub, "a.txt");
        settler.ingest(entry, now);
        now += Duration::from_micros(100);
    }
    drain(&mut settler, now);
    let end = settler.watch.work();
    assert_eq!(
        end.dir_scans - start.dir_scans,
        DIRS,
        "each directory looked through"
    );
    // One look at every watched directory per notice would be DIRS each.
    assert!(
        end.entries - start.entries <= 10 * DIRS,
        "entries looked at: {} for {DIRS} notices",
        end.entries - start.entries
    );
}

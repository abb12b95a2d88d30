//! Evaluation cost per event against 10, 1 000 and 10 000 policies that
//! cannot match it (plus one that does). `cargo xtask bench` runs it and
//! reads the JSON lines it prints.
use std::{hint::black_box, path::Path, time::Instant};

use reflex::{
    events::{Body, Exec, Kind, ProcessContext, Record},
    policy::{PolicySet, compile, load},
};

fn set(n: usize) -> PolicySet {
    let mut text = String::from(
        "name: the-one\non: { exec: { paths: [\"/usr/bin/target-tool\"] } }\ndo: [alert]\n---\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "name: p{i}\non: {{ exec: {{ paths: [\"/opt/app{i}/bin/*\", \"/srv/tool{i}\"] }} }}\nwhen: {{ process: {{ uid: [{i}] }} }}\ndo: [alert]\n---\n"
        ));
    }
    let (sources, mut errors) = load::parse_source(Path::new("bench.yaml"), &text);
    let policies = compile::compile_all(sources, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    PolicySet::new(policies)
}

fn record(exe: &str) -> Record {
    Record {
        time: String::new(),
        ktime_ns: 1,
        kind: Kind::Exec,
        process: ProcessContext {
            pid: 42,
            comm: "tool".into(),
            exe: Some(exe.into()),
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

fn main() {
    let events = 200_000;
    for n in [10, 1_000, 10_000] {
        let set = set(n);
        let hit = record("/usr/bin/target-tool");
        let miss = record("/usr/bin/ls");
        let start = Instant::now();
        let mut matched = 0;
        for i in 0..events {
            let r = if i % 2 == 0 { &hit } else { &miss };
            matched += black_box(set.evaluate(black_box(r))).len();
        }
        let ns = start.elapsed().as_nanos() as f64 / events as f64;
        assert_eq!(matched, events / 2);
        println!("{{\"policies\": {n}, \"ns_per_event\": {ns:.1}}}");
    }
}

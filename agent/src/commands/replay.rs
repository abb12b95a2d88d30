//! `reflex replay`: decisions for a recorded event stream, carrying out
//! nothing. The stream is what `reflex events` prints (finished events of
//! every family), and the engine is the one `reflex run` uses.
use std::{
    fs::File,
    io::{self, BufRead as _, BufReader, Write as _},
    path::Path,
    process::ExitCode,
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    engine::{
        Engine,
        plan::{DEFAULT_FUSE_LIMIT, Decision},
        reload,
    },
    events::{Kind, Record},
};

/// One replayed decision: which event, and what was decided.
#[derive(Serialize)]
struct Replayed<'a> {
    ktime_ns: u64,
    kind: Kind,
    pid: u32,
    exe: Option<&'a str>,
    #[serde(flatten)]
    decision: Decision,
}

/// Prints one JSON line per decision; exit 1 if the policies or the stream
/// are unreadable.
pub fn replay(events: &Path, policies: &Path) -> anyhow::Result<ExitCode> {
    let Some(set) = reload::load_logged(policies) else {
        anyhow::bail!(
            "the policies in {} have errors (logged above)",
            policies.display()
        );
    };
    let file = File::open(events).with_context(|| format!("opening {}", events.display()))?;
    let mut engine = Engine::new(std::sync::Arc::new(set), DEFAULT_FUSE_LIMIT, None);
    let mut out = io::BufWriter::new(io::stdout().lock());
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", events.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a `reflex events` record",
                events.display(),
                n + 1
            )
        })?;
        for verdict in engine.judge(&record) {
            let replayed = Replayed {
                ktime_ns: record.ktime_ns,
                kind: record.kind,
                pid: record.process.pid,
                exe: record.process.exe.as_deref(),
                decision: verdict.plan.decision,
            };
            serde_json::to_writer(&mut out, &replayed).context("writing a decision")?;
            out.write_all(b"\n").context("writing a decision")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

//! Logging setup: `tracing` to stderr, as text or JSON, written by a
//! thread of its own. A reader that stops (a stalled journal, a pipe
//! nobody drains) fills a bounded queue and loses lines, counted in
//! `reflex_log_lines_dropped_total`, but never holds up a stage that logs.
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt};

/// Log lines waiting for stderr's reader at most, by default.
pub const DEFAULT_QUEUE_LINES: usize = 8192;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines lost so far because stderr was not read fast enough.
pub fn lines_dropped() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `verbose`. Keep
/// the guard until exit: dropping it writes out what is queued.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, verbose: u8, queue_lines: usize) -> WorkerGuard {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines.max(1))
        .thread_name("reflex-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        // Reporting a failed log write goes to stderr too, and `eprintln!`
        // panics when stderr is closed: a daemon must not die of that.
        .log_internal_errors(false);
    // A second init (tests) keeps the first subscriber, which is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// An error and its sources on one line, for log fields and alert details.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

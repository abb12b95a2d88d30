//! `reflex status`: a terminal view of a running agent, read from its
//! `/metrics` and its alert log (no server of its own). Redrawn in place
//! every interval; `--once` prints one view for scripts.
mod scrape;
mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::Instant,
};

use anyhow::Context as _;

use super::compact::{Paint, colour_stdout};
use crate::cli::StatusArgs;
use scrape::Samples;
use view::View;

/// ANSI: cursor home, then clear to the end of the screen.
const REDRAW: &str = "\x1b[H\x1b[J";

/// Runs `reflex status`; exits 1 when the agent cannot be read.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let paint = Paint(colour_stdout());
    let mut before = read(args)?;
    let mut stdout = std::io::stdout();
    let redraw = !args.once && stdout.is_terminal();
    loop {
        std::thread::sleep(args.interval);
        let now = match read(args) {
            Ok(now) => now,
            Err(err) if !args.once => {
                // A restart of the agent is worth watching through.
                writeln!(stdout, "{REDRAW}reflex status: {err:#}")?;
                stdout.flush()?;
                continue;
            }
            Err(err) => return Err(err),
        };
        // The alert log is root's (0600): without it the metrics still show.
        let (alerts, unread) = match scrape::last_alerts(&args.state_dir, args.decisions) {
            Ok(alerts) => (alerts, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        let text = View {
            addr: args.metrics_addr,
            before: Some((&before.0, now.1.duration_since(before.1))),
            now: &now.0,
            alerts: &alerts,
            unread: unread.as_deref(),
            paint,
        }
        .render();
        if redraw {
            write!(stdout, "{REDRAW}")?;
        } else if !args.once {
            writeln!(stdout, "--")?;
        }
        write!(stdout, "{text}")?;
        stdout.flush().context("writing to stdout")?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        before = now;
    }
}

fn read(args: &StatusArgs) -> anyhow::Result<(Samples, Instant)> {
    let samples = scrape::metrics(args.metrics_addr)?;
    Ok((samples, Instant::now()))
}

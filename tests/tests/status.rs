//! What an operator reads: `reflex status` against a running agent, drawn
//! in a real terminal (tmux) and printed once for scripts, and `reflex
//! events -o compact`.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use reflex_tests::{
    Scratch, eventually, metrics_addr, policy_alert, reflex_bin, require_root, run_to_end,
    start_agent,
};

const WAIT: Duration = Duration::from_secs(60);

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached session named `status` running `command`.
    fn start(command: &str) -> Self {
        let tmux = Self {
            socket: format!("reflex-test-{}", std::process::id()),
        };
        let ok = tmux
            .run(&[
                "new-session",
                "-d",
                "-s",
                "status",
                "-x",
                "200",
                "-y",
                "50",
                command,
            ])
            .status
            .success();
        assert!(ok, "tmux (installed by cargo xtask setup) starts a session");
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("tmux runs")
    }

    /// The visible screen, with (`escapes`) or without its colour codes.
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "status"];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn policy(scratch: &Scratch) -> String {
    let marked = scratch.tool("marked", "/bin/true");
    scratch.policy(
        "marked.yaml",
        &format!(
            "name: marked-runs\nmode: monitor\non:\n  exec: {{ paths: [\"{}\"] }}\ndo: [kill, alert]\n",
            marked.display()
        ),
    );
    marked.to_str().unwrap().to_string()
}

#[test]
fn status_draws_a_running_agent_in_a_terminal_and_once_for_scripts() {
    require_root();
    let scratch = Scratch::new();
    let marked = policy(&scratch);
    let agent = scratch.start();
    let addr = metrics_addr(&agent);
    let state = scratch.path("state");
    let command = format!(
        "{} status --metrics-addr {addr} --state-dir {} --interval 300ms",
        reflex_bin().display(),
        state.display()
    );
    let tmux = Tmux::start(&command);

    run_to_end(&mut Command::new(&marked), WAIT);
    policy_alert(&agent, WAIT, "marked-runs", |_| true);
    let mut screen = String::new();
    let drawn = eventually(WAIT, || {
        screen = tmux.screen(false);
        screen.contains("DECIDE marked-runs (monitor) on exec by marked[")
    });
    assert!(drawn, "the decision never reached the screen:\n{screen}");
    eprintln!("reflex status, as tmux shows it:\n{screen}");
    for expected in [
        "policies    1 loaded, revision 1",
        "probes      ",
        "events/s    exec ",
        "losses      none",
        "components  all up",
        "sinks       alert_log up",
        "would kill",
    ] {
        assert!(
            screen.contains(expected),
            "{expected:?} not on screen:\n{screen}"
        );
    }
    assert_eq!(
        screen.matches("reflex 0.").count(),
        1,
        "redrawn in place, not appended:\n{screen}"
    );
    assert!(
        tmux.screen(true).contains("\x1b["),
        "a terminal gets colours"
    );

    let once = Command::new(reflex_bin())
        .args(["status", "--once", "--interval", "100ms", "--metrics-addr"])
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("reflex status --once runs");
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success(), "{text}");
    assert!(text.contains("DECIDE marked-runs (monitor)"), "{text}");
    assert!(!text.contains('\x1b'), "no colours into a pipe:\n{text}");

    let gone = Command::new(reflex_bin())
        .args(["status", "--once", "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", reflex_tests::free_port()))
        .output()
        .expect("reflex status runs");
    assert!(!gone.status.success(), "no agent there: exit 1");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no agent answers"));
}

#[test]
fn events_compact_prints_one_human_line_per_event() {
    require_root();
    let scratch = Scratch::new();
    let marked = scratch.tool("compact-me", "/bin/true");
    let events = start_agent(
        &["events", "--kind", "exec,exit", "-o", "compact"],
        "streaming events",
    );
    let pid = run_to_end(&mut Command::new(&marked), WAIT);
    let exec = events
        .stdout_line(WAIT, |l| {
            l.contains(&format!("compact-me[{pid}]")) && l.contains("EXEC")
        })
        .expect("the exec, as one line");
    assert!(
        exec.contains(&format!(
            "EXEC  compact-me[{pid}] ran {marked}",
            marked = marked.display()
        )),
        "{exec}"
    );
    assert!(!exec.contains('\x1b'), "a pipe gets no colours: {exec}");
    let exit = events
        .stdout_line(WAIT, |l| {
            l.contains(&format!("compact-me[{pid}]")) && l.contains("EXIT")
        })
        .expect("the exit, as one line");
    assert!(exit.ends_with("exited 0"), "{exit}");
}

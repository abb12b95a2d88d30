//! The exclusion map (`EXCLUDED`: the agent and what its hooks start, by
//! task id, "entries leave when the task exits") can keep a task id after
//! its task is gone: when a thread other than the leader of an excluded
//! process calls `execve`, the kernel gives it the leader's pid (de_thread)
//! and releases its own thread id without a `sched_process_exit` for that
//! id. The id stays listed; the next process the pid allocator hands it to,
//! any user's, is then neither reported, nor refused by `block`, nor killed
//! at exec, and neither are its children (`sched_process_fork`).
//!
//! A hook that execs from a worker thread is all it takes (a Go program
//! calling `syscall.Exec`, a threaded script); a local user who can trigger
//! the hook's policy then cycles pids until one of its processes gets the
//! leaked id. Every file, process, socket and directory here is the test's
//! own; the attacking processes run as `nobody`; loopback only.
use std::{
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{
    ChildGuard, Scratch, free_port,
    programs::{MARKER_PROGRAM, compile},
    require_root,
};

/// A hook that execs `/bin/true` from a second thread, after writing that
/// thread's id to `argv[1]`.
const THREAD_EXEC_HOOK: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static const char *out;
static void *go(void *arg) {
    (void)arg;
    FILE *f = fopen(out, "w");
    if (f) { fprintf(f, "%d", gettid()); fclose(f); }
    char *argv[] = {"true", NULL};
    execv("/bin/true", argv);
    return NULL;
}
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    out = argv[1];
    pthread_t t;
    pthread_create(&t, NULL, go, NULL);
    pthread_join(t, NULL);
    return 1;
}
"#;

/// `cycle PID ADDR PORT VICTIM`: forks (at most pid_max + 100 times) until
/// a child gets PID; that child connects to ADDR:PORT, prints the outcome
/// and execs VICTIM.
const PID_CYCLER: &str = r#"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 5) return 2;
    pid_t target = atoi(argv[1]);
    long max = 4194304;
    FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
    if (f) { if (fscanf(f, "%ld", &max) != 1) max = 4194304; fclose(f); }
    for (long i = 0; i < max + 100; i++) {
        pid_t pid = fork();
        if (pid < 0) return 3;
        if (pid == 0) {
            if (getpid() != target) _exit(0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
            inet_pton(AF_INET, argv[2], &a.sin_addr);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            int r = connect(s, (struct sockaddr *)&a, sizeof a);
            printf("connect=%s\n", r == 0 ? "ok" : strerror(errno));
            fflush(stdout);
            char *args[] = {argv[4], NULL};
            execv(argv[4], args);
            _exit(4);
        }
        int status;
        waitpid(pid, &status, 0);
        if (pid == target) return 0;
    }
    printf("never reached\n");
    return 1;
}
"#;

#[test]
fn a_thread_exec_in_a_hook_leaves_no_excluded_pid_behind() {
    require_root();
    let scratch = Scratch::new();
    let root = fs::canonicalize(scratch.path("")).expect("scratch");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
    let tools = root.join("tools");
    let markers = root.join("markers");
    fs::create_dir(&tools).expect("tools");
    fs::create_dir(&markers).expect("markers");
    fs::set_permissions(&markers, fs::Permissions::from_mode(0o1777)).expect("chmod markers");
    let hook = compile(&tools, "hook", THREAD_EXEC_HOOK);
    let cycle = compile(&tools, "cycle", PID_CYCLER);
    let victim = compile(&tools, "victim", MARKER_PROGRAM);
    let trigger = root.join("bin/trigger");
    fs::copy("/bin/true", &trigger).expect("trigger");
    let tid_file = root.join("hook.tid");

    let port = free_port();
    let _listener = TcpListener::bind(("127.0.0.2", port)).expect("listen on 127.0.0.2");
    scratch.policy(
        "policies.yaml",
        &format!(
            "name: block-two\nmode: enforce\n\
             on: {{ connect: {{ direction: [outbound], remote: [\"127.0.0.2/32\"], ports: [{port}] }} }}\n\
             do: [block]\n---\n\
             name: no-victim\nmode: enforce\non: {{ exec: {{ paths: [\"{victim}\"] }} }}\ndo: [kill]\n---\n\
             name: hook\nmode: enforce\non: {{ exec: {{ paths: [\"{trigger}\"] }} }}\n\
             do:\n  - run: {{ command: [\"{hook}\", \"{tid}\"] }}\n",
            victim = victim.display(),
            trigger = trigger.display(),
            hook = hook.display(),
            tid = tid_file.display(),
        ),
    );
    let agent = scratch.start();

    let as_nobody = |program: &std::path::Path, args: &[String]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .args(args)
            .env("MARKER", markers.join("victim-ran"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    };

    // Any user may run the trigger; the agent runs the hook.
    let mut trig = ChildGuard::spawn(&mut as_nobody(&trigger, &[]));
    trig.wait_for(Duration::from_secs(5))
        .expect("trigger exits");
    agent
        .log_line(Duration::from_secs(10), "hook finished")
        .expect("the hook ran");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let tid = fs::read_to_string(&tid_file).expect("the hook's exec thread id");

    let out = as_nobody(
        &cycle,
        &[
            tid.trim().to_string(),
            "127.0.0.2".into(),
            port.to_string(),
            victim.display().to_string(),
        ],
    )
    .output()
    .expect("cycle pids");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    std::thread::sleep(Duration::from_millis(200));
    let victim_ran = markers.join("victim-ran").exists();
    assert!(
        !said.contains("connect=ok") && !victim_ran,
        "pid {}: {said:?}, covered binary ran: {victim_ran}",
        tid.trim()
    );
}

//! Tiny C programs the tests compile with the system's `cc`: one whose
//! first act is to leave a marker (so a marker proves it ran), one that
//! starts a program the ways `execve` has besides a path, and one that
//! changes a file the ways the syscall probes do not see.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Creates `$MARKER` as its very first act, then forks a child that creates
/// `$CHILD_MARKER`, then stays `$LINGER` seconds. Markers come through the
/// environment so the program can also be a script's interpreter (whose
/// first argument is the script).
pub const MARKER_PROGRAM: &str = r#"
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    const char *marker = getenv("MARKER");
    if (marker) close(creat(marker, 0644));
    const char *child = getenv("CHILD_MARKER");
    if (child && fork() == 0) {
        close(creat(child, 0644));
        _exit(0);
    }
    const char *linger = getenv("LINGER");
    if (linger) sleep(atoi(linger));
    return 0;
}
"#;

/// `spawn MODE FILE`: replaces itself with FILE without naming its path:
/// `fexecve` (glibc's, on a descriptor), `execveat` (AT_EMPTY_PATH),
/// `devfd` (`execve("/dev/fd/N")`) or `dirfd` (`execveat` relative to a
/// descriptor of FILE's directory). `spawn rename FROM TO` renames FROM to
/// TO and executes TO at once (a race with whoever watches TO's directory).
pub const SPAWN_PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (!strcmp(argv[1], "rename") && argc > 3) {
        char *moved[] = { argv[3], NULL };
        if (rename(argv[2], argv[3])) return 3;
        execve(argv[3], moved, environ);
        return 4;
    }
    char *args[] = { argv[2], NULL };
    if (!strcmp(argv[1], "dirfd")) {
        char dir[4096], base[4096];
        snprintf(dir, sizeof dir, "%s", argv[2]);
        snprintf(base, sizeof base, "%s", argv[2]);
        int dfd = open(dirname(dir), O_PATH | O_DIRECTORY);
        if (dfd < 0) return 3;
        syscall(SYS_execveat, dfd, basename(base), args, environ, 0);
        return 4;
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return 3;
    if (!strcmp(argv[1], "fexecve")) {
        fexecve(fd, args, environ);
    } else if (!strcmp(argv[1], "execveat")) {
        syscall(SYS_execveat, fd, "", args, environ, AT_EMPTY_PATH);
    } else if (!strcmp(argv[1], "devfd")) {
        char path[64];
        snprintf(path, sizeof path, "/dev/fd/%d", fd);
        execve(path, args, environ);
    }
    return 4;
}
"#;

/// `file_attack MODE PATH [TEXT]`: changes a file through io_uring, a
/// descriptor held past the settle time, a shared mapping written after
/// close, or `/proc/self/fd/N` (see the source for each mode).
pub const FILE_ATTACK_PROGRAM: &str = include_str!("programs/file_attack.c");

/// `abuse MODE ARGS`: a UDP connect flood, an exec storm, idle
/// connections, a burst of files, a FIFO swapped in; each bounded (see the
/// source).
pub const ABUSE_PROGRAM: &str = include_str!("programs/abuse.c");

/// `hung_fuse MOUNTPOINT CONTENT`: a FUSE filesystem with one file that
/// stops its own daemon (SIGSTOP) once it has answered a write, so every
/// later call on it hangs (see the source).
pub const HUNG_FUSE_PROGRAM: &str = include_str!("programs/hung_fuse.c");

/// Compiles `source` into `dir/NAME` with `cc` and returns its path.
pub fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    fs::write(&src, source).expect("write C source");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("the exec tests need a C compiler (cc)");
    assert!(status.success(), "cc failed on {}", src.display());
    fs::remove_file(&src).ok();
    out
}

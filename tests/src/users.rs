//! A throwaway unprivileged user, for tests that act as a hostile local
//! user would. Created by the test, removed on drop even when it fails.
use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

/// A system user with its own group, no home and no shell.
#[derive(Debug)]
pub struct TestUser {
    /// Its login name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

impl TestUser {
    /// Creates a user named from `tag` and this process's pid (at most 32
    /// characters, as `useradd` requires).
    pub fn create(tag: &str) -> Self {
        let mut name = format!("rfx{}{tag}", std::process::id());
        name.truncate(32);
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .stdout(Stdio::null())
            .status()
            .expect("the abuse tests need useradd (package passwd)");
        assert!(status.success(), "useradd {name} failed");
        let user = nix::unistd::User::from_name(&name)
            .expect("reading the user database")
            .expect("the user just created");
        Self {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// `program` set to run as this user, with no supplementary groups.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut command = Command::new(program.as_ref());
        command.uid(self.uid).gid(self.gid).current_dir("/");
        command
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // The test's guards have ended its processes by pid by now.
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `sh -c SCRIPT` as `nobody` with no groups, to its end within
/// `limit`; returns its pid (the shell's: `setpriv` execs it).
pub fn as_nobody(script: &str, limit: Duration) -> u32 {
    crate::run_to_end(
        Command::new("setpriv").args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ]),
        limit,
    )
}

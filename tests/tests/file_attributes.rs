//! Extended attributes are part of a file's baseline: a watched file
//! carrying `user.reflex=deployed` and a `security.capability`
//! (`cap_net_raw+ep`, written as the kernel stores it) is changed by an
//! attacker only in its attributes, through `/proc/self/fd/N` (which the
//! syscall probes do not see; fanotify does): a value replaced, the
//! capability removed, an attribute added. Each is put back to exactly the
//! recorded attributes, content and mode untouched, and alerted once.
//! Every file and process here is the test's own.
use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reflex_tests::{ChildGuard, Scratch, programs, reflex_baseline, require_root, stop_agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

const POLICY: &str = "name: managed\nmode: enforce\non:\n  file: { paths: [\"DIR/*.conf\"] }\ndo:\n  - revert\n  - alert: { summary: \"{file.path} {file.change}\" }\n";

/// `xattr_attack set|remove PATH NAME [VALUE]`: sets or removes one
/// attribute through `/proc/self/fd/N` of a read-only descriptor, so no
/// path-based call names the file.
const ATTACK: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return 3;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    if (!strcmp(argv[1], "set") && argc == 5)
        return setxattr(self, argv[3], argv[4], strlen(argv[4]), 0) ? 4 : 0;
    if (!strcmp(argv[1], "remove"))
        return removexattr(self, argv[3]) ? 5 : 0;
    return 2;
}
"#;

/// `security.capability` for `cap_net_raw+ep` (VFS_CAP_REVISION_2 with the
/// effective flag, CAP_NET_RAW = 13 permitted), as `setcap` writes it.
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The attributes of `path` itself (a symlink is not followed).
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).expect("listxattr");
    names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let name = String::from_utf8(name.to_vec()).expect("utf-8 name");
            let mut value = vec![0u8; 64 * 1024];
            let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).expect("getxattr");
            value.truncate(len);
            (name, value)
        })
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", path.display()));
}

/// Waits until `path` holds `content`, mode 0644 and exactly `want`.
fn wait_restored(path: &Path, content: &str, want: &BTreeMap<String, Vec<u8>>) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let ok = fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.mode() & 0o7777 == 0o644)
            && fs::read_to_string(path).is_ok_and(|c| c == content)
            && xattrs(path) == *want;
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn attribute_changes_are_put_back_and_alerted_once() {
    require_root();
    let scratch = Scratch::new();
    let etc = scratch.path("etc");
    fs::create_dir(&etc).unwrap();
    let tool = programs::compile(&scratch.path("bin"), "xattr_attack", ATTACK);
    let cases: [(&str, &[&str]); 3] = [
        ("replace", &["set", "user.reflex", "tampered"]),
        ("drop-cap", &["remove", "security.capability"]),
        ("add", &["set", "user.evil", "1"]),
    ];
    for (name, _) in cases {
        let path = etc.join(format!("{name}.conf"));
        fs::write(&path, format!("deployed content for {name}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        set_xattr(&path, "user.reflex", b"deployed");
        set_xattr(&path, "security.capability", &CAP_NET_RAW_EP);
    }
    let recorded = xattrs(&etc.join("replace.conf"));
    assert_eq!(
        recorded.get("security.capability").map(Vec::as_slice),
        Some(&CAP_NET_RAW_EP[..]),
        "the kernel keeps the capability as written: {recorded:?}"
    );
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    scratch.policy(
        "managed.yaml",
        &POLICY.replace("DIR", etc.to_str().expect("utf-8")),
    );
    let agent = scratch.start();

    for (name, args) in cases {
        let path = etc.join(format!("{name}.conf"));
        let content = format!("deployed content for {name}\n");
        let mut child = ChildGuard::spawn(
            Command::new(&tool)
                .arg(args[0])
                .arg(&path)
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let pid = child.pid();
        let status = child.wait_for(WAIT).expect("the attack finishes");
        assert!(
            status.success(),
            "{name}: the attack itself failed: {status:?}"
        );
        assert!(
            wait_restored(&path, &content, &recorded),
            "{name}: {} was left with {:?}",
            path.display(),
            xattrs(&path)
        );
        let line = agent
            .stdout_line(WAIT, |l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|v| v["event"]["file"]["path"] == path.to_str().unwrap())
            })
            .unwrap_or_else(|| panic!("{name}: no alert"));
        let alert: Value = serde_json::from_str(&line).unwrap();
        let file = &alert["event"]["file"];
        assert_eq!(alert["event"]["process"]["pid"], pid, "{name}: {alert}");
        assert_eq!(file["change"], "attrib", "{name}: {alert}");
        let baseline = &file["baseline"]["managed"];
        assert_eq!(
            baseline["sha256"], file["after"]["sha256"],
            "{name}: content untouched"
        );
        assert!(baseline["xattrs_sha256"].is_string(), "{name}: {alert}");
        assert_ne!(
            baseline["xattrs_sha256"], file["after"]["xattrs_sha256"],
            "{name}: the attributes are what changed"
        );
        assert_eq!(alert["results"][0]["action"], "revert", "{name}");
        assert_eq!(alert["results"][0]["ok"], true, "{name}: {alert}");
    }
    // One alert per change: the restore itself is not a change.
    std::thread::sleep(Duration::from_millis(600));
    let extra: Vec<String> = agent.stdout.try_iter().collect();
    assert!(extra.is_empty(), "unexpected extra alerts: {extra:#?}");
    stop_agent(agent);

    // With no agent watching, `reflex baseline diff` names what differs.
    let path = etc.join("replace.conf");
    let (code, out) = reflex_baseline(&scratch.path("state"), &["diff", path.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""), "restored: nothing differs");
    set_xattr(&path, "user.evil", b"1");
    rustix::fs::lremovexattr(&path, "security.capability").unwrap();
    let (code, out) = reflex_baseline(&scratch.path("state"), &["diff", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("-security.capability, +user.evil"), "{out}");
}

//! Loading `reflex.yaml`: errors with their place, defaults, bounds.
use super::*;

#[test]
fn unknown_fields_are_rejected_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reflex.yaml");
    std::fs::write(
        &path,
        "state_dir: /tmp/x\nalerts:\n  stdout: true\n  colour: red\n",
    )
    .unwrap();
    let err = Config::load(&path, true).unwrap_err().to_string();
    assert!(err.contains("reflex.yaml:4:3:"), "{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");
}

#[test]
fn a_missing_default_file_is_empty_but_a_named_one_is_an_error() {
    let missing = Path::new("/nonexistent/reflex.yaml");
    assert!(Config::load(missing, false).is_ok());
    assert!(Config::load(missing, true).is_err());
}

#[test]
fn sinks_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reflex.yaml");
    std::fs::write(
        &path,
        "alerts:\n  webhooks:\n    - { name: ops, url: 'http://127.0.0.1:1/x', bearer_token: t, timeout: 2s }\n  alertmanager: { url: 'http://127.0.0.1:9093', resolve_after: 10m }\n",
    )
    .unwrap();
    // It holds a token: owner-only, or it is refused.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = Config::load(&path, true).unwrap();
    assert_eq!(config.alerts.webhooks[0].name, "ops");
    assert!(config.alerts.alertmanager.is_some());
}

#[test]
fn a_readable_file_with_a_token_is_refused_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reflex.yaml");
    std::fs::write(
        &path,
        "alerts:\n  webhooks:\n    - { name: ops, url: 'http://127.0.0.1:1/x', bearer_token: s3cret }\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::load(&path, true).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::load(&path, true).is_ok());
    // Without credentials the mode does not matter.
    std::fs::write(&path, "alerts: { stdout: false }\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Config::load(&path, true).is_ok());
}

#[test]
fn bounds_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reflex.yaml");
    let resolve = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            ..RunArgs::default()
        };
        Settings::resolve(&args)
    };
    let settings = resolve(
        "alerts: { log_max_bytes: 1MiB, log_keep: 2, spool_max_bytes: 64KiB }\nhooks: { max_per_policy: 1 }\nmetrics: { max_connections: 8, header_timeout: 2s }\n",
    )
    .unwrap();
    assert_eq!(settings.alert_log.max_bytes, 1 << 20);
    assert_eq!(settings.alert_log.keep, 2);
    assert_eq!(settings.spool.max_bytes, 64 << 10);
    assert_eq!(settings.hooks.max_per_policy, 1);
    assert_eq!(settings.metrics_limits.max_connections, 8);
    let err = resolve("alerts: { max_line_bytes: 1KiB }\n").unwrap_err();
    assert!(err.to_string().contains("max_line_bytes"), "{err}");
    let err = resolve("alerts: { log_max_bytes: 8KiB }\n").unwrap_err();
    assert!(err.to_string().contains("log_max_bytes"), "{err}");
    let settings = resolve("ring_buffers: { file: 16MiB, connect: 64KiB }\n").unwrap();
    assert_eq!(settings.rings.file, 16 << 20);
    assert_eq!(settings.rings.connect, 64 << 10);
    assert_eq!(
        settings.rings.exec,
        crate::loader::RingSizes::default().exec
    );
    let err = resolve("ring_buffers: { exec: 5000 }\n").unwrap_err();
    assert!(err.to_string().contains("ring_buffers.exec"), "{err}");
    let err = resolve("ring_buffers: { file: 4GiB }\n").unwrap_err();
    assert!(err.to_string().contains("ring_buffers.file"), "{err}");
    assert_eq!(
        settings.exec_flush,
        crate::events::reader::DEFAULT_EXEC_FLUSH
    );
    let flush = resolve("ring_buffers: { exec_flush: 50ms }\n").unwrap();
    assert_eq!(flush.exec_flush, std::time::Duration::from_millis(50));
    let err = resolve("ring_buffers: { exec_flush: 0s }\n").unwrap_err();
    assert!(err.to_string().contains("ring_buffers.exec_flush"), "{err}");
    let err = resolve("ring_buffers: { exec_flush: 2s }\n").unwrap_err();
    assert!(err.to_string().contains("ring_buffers.exec_flush"), "{err}");
    assert_eq!(resolve("event_queue: 2048\n").unwrap().event_queue, 2048);
    let settings = resolve("process: { cgroup_cache: 64 }\n").unwrap();
    assert_eq!(settings.cgroup_cache, 64);
    let err = resolve("event_queue: 10\n").unwrap_err();
    assert!(err.to_string().contains("event_queue"), "{err}");
}

#[test]
fn the_packaged_file_states_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/reflex.yaml");
    let resolve = |config: &Path| {
        let args = RunArgs {
            config: Some(config.to_owned()),
            ..RunArgs::default()
        };
        format!("{:?}", Settings::resolve(&args).unwrap())
    };
    assert_eq!(resolve(&packaged), resolve(&empty));
}

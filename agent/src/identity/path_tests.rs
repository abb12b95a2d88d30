use super::*;

const ID: &str = "4f0e2bc7a1d3c9e8b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa0";

#[test]
fn units_as_systemd_names_them() {
    let cases = [
        ("/system.slice/nginx.service", Some("nginx.service")),
        ("/system.slice/cron.service", Some("cron.service")),
        (
            "/user.slice/user-1000.slice/session-3.scope",
            Some("session-3.scope"),
        ),
        ("/system.slice/foo.service/payload", Some("foo.service")),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            Some("user@1000.service"),
        ),
        ("/system.slice/docker-X.scope", Some("docker-X.scope")),
        ("/init.scope", Some("init.scope")),
        ("/", None),
        ("/system.slice", None),
        ("/user.slice/user-1000.slice", None),
        ("/docker/abc", None),
        (
            "/reflex-test.slice/reflex-test-1.service",
            Some("reflex-test-1.service"),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(unit(path).as_deref(), want, "{path}");
    }
}

#[test]
fn user_units_under_the_user_manager() {
    let path = "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service";
    assert_eq!(user_unit(path).as_deref(), Some("foo.service"));
    assert_eq!(
        user_unit("/user.slice/user-1000.slice/user@1000.service/init.scope").as_deref(),
        Some("init.scope")
    );
    assert_eq!(user_unit("/system.slice/nginx.service"), None);
    assert_eq!(
        user_unit("/user.slice/user-1000.slice/session-3.scope"),
        None
    );
}

#[test]
fn containers_by_runtime_convention() {
    let cases = [
        (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
        (format!("/docker/{ID}"), Runtime::Docker),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/crio-{ID}.scope"
            ),
            Runtime::CriO,
        ),
        (format!("/kubepods/burstable/pod1f2e-77/{ID}"), Runtime::Cri),
        (format!("/machine.slice/libpod-{ID}.scope"), Runtime::Podman),
        (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
        // A container running its own systemd: the container, not its units.
        (
            format!("/system.slice/docker-{ID}.scope/system.slice/cron.service"),
            Runtime::Docker,
        ),
    ];
    for (path, runtime) in cases {
        let found = container(&path).unwrap_or_else(|| panic!("no container in {path}"));
        assert_eq!((found.id.as_str(), found.runtime), (ID, runtime), "{path}");
    }
}

#[test]
fn nspawn_machines_by_name() {
    for path in [
        "/machine.slice/systemd-nspawn@web-1.service",
        "/machine.slice/systemd-nspawn@web-1.service/payload/system.slice/x.service",
        "/machine.slice/machine-web\\x2d1.scope",
    ] {
        let found = container(path).unwrap_or_else(|| panic!("no container in {path}"));
        assert_eq!(found.runtime, Runtime::Nspawn, "{path}");
        assert_eq!(found.id, "web-1", "{path}");
        assert_eq!(found.name.as_deref(), Some("web-1"), "{path}");
    }
}

#[test]
fn not_containers() {
    for path in [
        "/".to_string(),
        "/system.slice/nginx.service".into(),
        "/system.slice/docker.service".into(),
        // conmon watches a container from outside it.
        format!("/machine.slice/libpod-conmon-{ID}.scope"),
        format!("/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"),
        // Not 64 hex digits.
        "/system.slice/docker-1234.scope".into(),
        format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
        "/docker/short".into(),
        format!("/other/{ID}"),
        "/machine.slice/other.service".into(),
        // Named by a user in its delegated tree, or a runtime root that is
        // not at the top: forgeable, so never a container.
        format!("/user.slice/user-999.slice/user@999.service/docker-{ID}.scope"),
        format!("/user.slice/user-999.slice/user@999.service/kubepods/{ID}"),
        "/user.slice/user-999.slice/user@999.service/machine.slice/machine-api.scope".into(),
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
        format!("/system.slice/foo.service/kubepods/{ID}"),
        "/system.slice/x.service/machine.slice/machine-api.scope".into(),
    ] {
        assert_eq!(container(&path), None, "{path}");
    }
}

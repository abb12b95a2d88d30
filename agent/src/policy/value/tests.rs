//! Parsing of each scalar kind: what is accepted and what is refused.
use super::*;

#[test]
fn scalars_parse_and_reject() {
    assert!(PathGlob::parse("/usr/bin/nc*").is_ok());
    assert!(PathGlob::parse("usr/bin").is_err());
    assert!(PathGlob::parse("/a/[b").is_err());
    assert_eq!(
        DurationValue::parse("60s").unwrap().0,
        Duration::from_secs(60)
    );
    assert!(DurationValue::parse("sixty").is_err());
    assert!(DurationValue::parse("0s").is_err());
    assert_eq!(Percent::parse("80%").unwrap().0, 80.0);
    assert!(Percent::parse("180%").is_err());
    assert!(Cidr::parse("10.0.0.0/8").is_ok());
    assert!(Cidr::parse("::1").is_ok());
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    let v4 = |t: &str| Cidr::parse(t).unwrap().0;
    assert_eq!(v4("::ffff:127.0.0.0/104"), v4("127.0.0.0/8"));
    assert_eq!(v4("::FFFF:7F00:2"), v4("127.0.0.2/32"));
    assert_eq!(v4("::ffff:0:0/96"), v4("0.0.0.0/0"));
    assert!(matches!(v4("::ffff:0:0/95"), IpNet::V6(_)));
    assert!(
        matches!(v4("::127.0.0.2"), IpNet::V6(_)),
        "IPv4-compatible stays IPv6"
    );
    assert_eq!(PortRange::parse("8000-8100").unwrap().last, 8100);
    assert!(PortRange::parse("9-1").is_err());
    assert!(PortRange::parse("70000").is_err());
    assert_eq!(
        SignalValue::parse("term").unwrap().0,
        nix::sys::signal::Signal::SIGTERM
    );
    assert!(SignalValue::parse("SIGNOPE").is_err());
}

#[test]
fn templates_render_fields() {
    let t = Template::parse("netcat by {process.parent.exe} ({process.pid})").unwrap();
    let event = serde_json::json!({"process": {"pid": 7, "parent": {"exe": "/bin/bash"}}});
    assert_eq!(t.render(&event), "netcat by /bin/bash (7)");
    assert!(Template::parse("{unclosed").is_err());
    assert!(Template::parse("{}").is_err());
    assert!(Template::parse("a } b").is_err());
}

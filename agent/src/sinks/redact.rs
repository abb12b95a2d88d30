//! Sink addresses as logs show them: a webhook URL carries its secret in
//! its user info, its query or its path (`/services/T0/B0/XXXX`), so only
//! the scheme, host and port are shown; tokens and header values never are.

/// `scheme://host:port`, with `/…` when the URL has more; never its user
/// info, path or query.
pub fn url(text: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(text) else {
        return "<an unparseable URL>".to_string();
    };
    let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    let more = parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some();
    if more {
        shown.push_str("/…");
    }
    shown
}

/// A delivery error with every source, the request's URL redacted.
pub fn error(err: &reqwest::Error) -> String {
    let text = crate::logging::error_chain(err);
    match err.url() {
        Some(u) => text.replace(u.as_str(), &url(u.as_str())),
        None => text,
    }
}

/// A secret as `Debug` shows it.
pub struct Hidden;

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_paths_and_queries_are_not_shown() {
        assert_eq!(
            url("https://user:pa55@hooks.example:8443/services/T0/B0/XXXX?token=abc"),
            "https://hooks.example:8443/…"
        );
        assert_eq!(url("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
        assert_eq!(url("not a url"), "<an unparseable URL>");
    }
}

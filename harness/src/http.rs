//! Plain HTTP/1.0 GETs on loopback: the agent's `/metrics` and the test
//! servers (Prometheus, Alertmanager) beside it.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::{Error, Metrics};

/// GETs `path` from `addr`, which must be a loopback address, and returns
/// the body whatever the status (connect within 5 s, answer within 10 s).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, Error> {
    if !addr.ip().is_loopback() {
        return Err(Error::NotLoopback(addr));
    }
    let failed = |source| Error::Http {
        addr,
        path: path.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(failed)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(failed)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(failed)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(failed)?;
    let response = String::from_utf8_lossy(&response);
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Fetches and parses `/metrics` from the agent at `addr` (loopback).
pub fn scrape(addr: SocketAddr) -> Result<Metrics, Error> {
    Ok(Metrics::parse(&http_get(addr, "/metrics")?)?)
}

#[cfg(test)]
mod tests {
    use std::{io::BufRead as _, net::TcpListener, thread};

    use super::*;

    /// Serves one request with `body`; returns the request line.
    fn serve_once(body: &'static str) -> (SocketAddr, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = String::new();
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            reader.read_line(&mut request).expect("request line");
            // The whole request is read before answering: closing with
            // bytes unread sends a reset, which the client may see before
            // the answer.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            write!(
                stream,
                "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n{body}"
            )
            .expect("answer");
            request
        });
        (addr, server)
    }

    #[test]
    fn scrape_gets_and_parses_metrics() {
        let (addr, server) = serve_once("# TYPE x counter\nx{a=\"1\"} 5\nx{a=\"2\"} 6\n");
        let metrics = scrape(addr).expect("scraped");
        assert_eq!(metrics.sum("x", &[]), 11.0);
        assert_eq!(server.join().expect("server"), "GET /metrics HTTP/1.0\r\n");
    }

    #[test]
    fn addresses_outside_loopback_are_refused() {
        let addr: SocketAddr = "192.0.2.1:9807".parse().unwrap();
        assert!(matches!(http_get(addr, "/metrics"), Err(Error::NotLoopback(a)) if a == addr));
    }
}

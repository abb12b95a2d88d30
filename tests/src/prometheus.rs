//! A real Prometheus on loopback scraping the agent under test, its query
//! API, and a picture of query results (the README's dashboard figure).
use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{ChildGuard, Scratch, eventually, free_port, http_get};

/// A Prometheus child scraping one target every second; killed on drop.
pub struct Prometheus {
    _guard: ChildGuard,
    /// Where its API answers.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus with job `reflex` scraping `target` every second,
    /// its data under `scratch`, and waits (bounded) until it answers.
    pub fn start(scratch: &Scratch, target: SocketAddr) -> Self {
        let port = free_port();
        let config = scratch.path("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reflex\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus config");
        let guard = ChildGuard::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    scratch.path("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        // It listens before its storage is open and answers 503 until then.
        assert!(
            eventually(Duration::from_secs(60), || {
                reflex_harness::http_get(addr, "/-/ready").is_ok_and(|b| b.contains("is Ready"))
            }),
            "Prometheus (installed by cargo xtask setup) never became ready on {addr}"
        );
        Self {
            _guard: guard,
            addr,
        }
    }

    /// `GET /api/v1/PATH?query=QUERY&EXTRA`, parsed.
    pub fn api(&self, path: &str, query: &str, extra: &str) -> serde_json::Value {
        let body = http_get(
            self.addr,
            &format!("/api/v1/{path}?query={}{extra}", encode(query)),
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} {query}: {e}: {body}"))
    }

    /// An instant query: Prometheus's whole answer.
    pub fn query(&self, query: &str) -> serde_json::Value {
        self.api("query", query, "")
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One panel of a picture: a title and its series, each a list of
/// (seconds, value) points.
pub struct Chart {
    /// Panel title.
    pub title: String,
    /// Series name and points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Colours of successive series.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// Draws `charts` two to a row as one SVG at `path`.
pub fn draw(path: &Path, title: &str, charts: &[Chart]) {
    let (w, h, top) = (480.0, 200.0, 40.0);
    let rows = charts.len().div_ceil(2);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#111217\"/>\n\
         <text x=\"10\" y=\"26\" fill=\"#ccccdc\" font-size=\"18\">{}</text>\n",
        2.0 * w + 30.0,
        top + rows as f64 * (h + 10.0),
        escape(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        let x0 = 10.0 + (i % 2) as f64 * (w + 10.0);
        let y0 = top + (i / 2) as f64 * (h + 10.0);
        let _ = write!(
            svg,
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"#181b1f\" stroke=\"#2c3235\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"#ccccdc\" font-size=\"13\">{}</text>\n",
            x0 + 8.0,
            y0 + 18.0,
            escape(&chart.title)
        );
        let points = chart.series.iter().flat_map(|s| &s.1);
        let (mut t_min, mut t_max, mut v_max) = (f64::MAX, f64::MIN, 0.0f64);
        for &(t, v) in points {
            t_min = t_min.min(t);
            t_max = t_max.max(t);
            if v.is_finite() {
                v_max = v_max.max(v);
            }
        }
        let v_max = if v_max > 0.0 { v_max * 1.1 } else { 1.0 };
        let span = (t_max - t_min).max(1.0);
        let (px, py, pw, ph) = (x0 + 50.0, y0 + 28.0, w - 60.0, h - 70.0);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"#8e8e8e\" text-anchor=\"end\">{}</text>\
             <text x=\"{}\" y=\"{}\" fill=\"#8e8e8e\" text-anchor=\"end\">0</text>\
             <line x1=\"{px}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#2c3235\"/>",
            px - 4.0,
            py + 8.0,
            short(v_max),
            px - 4.0,
            py + ph,
            py + ph,
            px + pw,
            py + ph
        );
        for (n, (name, series)) in chart.series.iter().enumerate() {
            // Six legend entries fit a panel; the rest are drawn unnamed.
            let name = if n < 6 { name.as_str() } else { "" };
            let colour = COLOURS[n % COLOURS.len()];
            let line: Vec<String> = series
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, v)| {
                    format!(
                        "{:.1},{:.1}",
                        px + (t - t_min) / span * pw,
                        py + ph - v / v_max * ph
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
                line.join(" "),
                x0 + 10.0 + (n % 3) as f64 * 155.0,
                y0 + h - 24.0 + (n / 3) as f64 * 14.0,
                escape(&name.chars().take(24).collect::<String>())
            );
        }
    }
    svg.push_str("</svg>\n");
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("picture directory");
    }
    fs::write(path, svg).expect("write the picture");
}

fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.3}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

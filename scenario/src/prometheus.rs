//! A real Prometheus server scraping one target, so that tests check the tracer's
//! `/metrics` the way it will be read in production (the text format as Prometheus
//! parses it, labels as they land in series) instead of against our own parser.
//!
//! It is Debian's `prometheus` package (`cargo xtask setup` installs it); where it is
//! absent, [`PrometheusServer::start`] says so with `Ok(None)` and callers skip loudly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::http;
use crate::process::ChildGuard;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Startup replays nothing (a fresh TSDB), but a loaded CI machine has taken seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A Prometheus process with its own config and TSDB in a temporary folder; dropping it
/// kills it and removes the folder.
pub struct PrometheusServer {
    child: Option<ChildGuard>,
    dir: PathBuf,
    port: u16,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `scrape_target` ("127.0.0.1:9464", path /metrics) every
    /// `scrape_interval`, and waits until it is ready. `Ok(None)` when it is not installed.
    pub fn start(scrape_target: &str, scrape_interval: Duration) -> Result<Option<Self>> {
        if !Path::new(PROMETHEUS).is_file() {
            return Ok(None);
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("tracer-prometheus-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
        // From here on, Drop cleans the folder up whatever fails.
        let mut server = PrometheusServer { child: None, dir, port: 0 };
        let interval = format!("{}ms", scrape_interval.as_millis().max(1));
        // A scrape may take the whole interval; Prometheus refuses a longer timeout.
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{scrape_target}']\n"
        );
        let config_path = server.dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        server.port = http::free_port()?;
        let log_path = server.dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", server.dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", server.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {PROMETHEUS}"))?;
        server.child = Some(ChildGuard(child));
        server.wait_ready(&log_path)?;
        Ok(Some(server))
    }

    fn wait_ready(&mut self, log_path: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log_tail = || {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.0.try_wait().ok().flatten()) {
                bail!("prometheus exited ({status}) before it was ready; its log ends:\n{}", log_tail());
            }
            if status_of(self.port, "/-/ready") == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("prometheus on port {} not ready after {READY_TIMEOUT:?}; its log ends:\n{}", self.port, log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query: the `data.result` array (one object per series, with `metric`
    /// holding the labels and `value` as `[time, "number"]`).
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let Some(body) = http::get_json(self.port, &path) else {
            bail!("no JSON answer from {}{path}", self.url());
        };
        if body["status"] != "success" {
            bail!("query {promql:?} failed: {} {}", body["errorType"], body["error"]);
        }
        match &body["data"]["result"] {
            serde_json::Value::Array(a) => Ok(a.clone()),
            // A scalar or string query has no series list; say so rather than guess.
            other => bail!("query {promql:?} gave {} ({other}), not a vector", body["data"]["resultType"]),
        }
    }

    /// Polls [`query`](Self::query) until `pred` holds on its result, or fails at
    /// `timeout` with the last result (a query error ends it at once: polling will not
    /// fix bad PromQL).
    pub fn wait_for(&self, promql: &str, timeout: Duration, pred: impl Fn(&[serde_json::Value]) -> bool) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql)?;
            if pred(&result) {
                return Ok(result);
            }
            if Instant::now() >= deadline {
                bail!("{promql:?} did not reach the expected result in {timeout:?}; last: {}", serde_json::Value::Array(result));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // The guard kills and reaps it before the folder goes.
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status code of `GET path` on 127.0.0.1:port (http::get_json wants a JSON body,
/// and /-/ready answers in plain text).
fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A query-string value: everything but the unreserved characters escaped (PromQL is
/// full of `{}"=~ +`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn promql_is_escaped_for_a_query_string() {
        assert_eq!(percent_encode(r#"up{job="tracer"} + 1"#), "up%7Bjob%3D%22tracer%22%7D%20%2B%201");
        assert_eq!(percent_encode("a_b-c.d~"), "a_b-c.d~");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    /// A /metrics endpoint as small as it gets: the same text to every request.
    fn serve_metrics(text: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                // Prometheus sends one request per connection here, headers only.
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        port
    }

    #[test]
    fn prometheus_scrapes_a_target_and_answers_with_its_labels() {
        let port = serve_metrics(
            "# HELP tracer_test_events_total Events seen, per service.\n\
             # TYPE tracer_test_events_total counter\n\
             tracer_test_events_total{service=\"pod 74c13223-5a00-11e9-b385-42010a80018d/9ec39b91f3d7\",kind=\"oom_kill\"} 3\n\
             tracer_test_events_total{service=\"nginx.service\",kind=\"signal\"} 1\n",
        );
        let Some(prom) = PrometheusServer::start(&format!("127.0.0.1:{port}"), Duration::from_millis(200)).unwrap() else {
            eprintln!("SKIP prometheus_scrapes_a_target_and_answers_with_its_labels: {PROMETHEUS} is not installed (cargo xtask setup installs it)");
            return;
        };
        let result = prom
            .wait_for(r#"tracer_test_events_total{kind="oom_kill"}"#, Duration::from_secs(30), |r| !r.is_empty())
            .unwrap();
        assert_eq!(result.len(), 1, "{result:?}");
        let metric = &result[0]["metric"];
        assert_eq!(metric["service"], "pod 74c13223-5a00-11e9-b385-42010a80018d/9ec39b91f3d7");
        assert_eq!(metric["job"], "tracer");
        assert_eq!(metric["instance"], format!("127.0.0.1:{port}"));
        assert_eq!(result[0]["value"][1], "3");
        // Both series, and the target is up.
        assert_eq!(prom.query("sum(tracer_test_events_total)").unwrap()[0]["value"][1], "4");
        assert_eq!(prom.query("up").unwrap()[0]["value"][1], "1");
        // Bad PromQL is an error, not an empty answer.
        assert!(prom.query("sum(").unwrap_err().to_string().contains("bad_data"));
        assert!(prom.url().starts_with("http://127.0.0.1:"));
        let dir = prom.dir.clone();
        drop(prom);
        assert!(!dir.exists(), "{} removed", dir.display());
    }
}

//! `workload probe`: the client side of the original end-to-end tests. It polls
//! `/health`, sends translations, and records every outcome, naming connection errors
//! by their errno (ECONNRESET, ECONNREFUSED) as the kernel reported them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What to probe and how often.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub addr: SocketAddr,
    pub host: String,
    pub interval: Duration,
    /// Zero disables translations.
    pub translate_interval: Duration,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub text: String,
    pub source: String,
    pub target: String,
    pub model: Option<String>,
}

/// One request and what became of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeRecord {
    /// Milliseconds since the probe started.
    pub t_ms: f64,
    /// Wall clock, seconds since the Unix epoch, to line up with a tracer timeline.
    pub unix_s: f64,
    pub op: String,
    /// "ok" (2xx), "http" (another status) or "error" (no HTTP answer).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// For outcome "error": ECONNRESET, ECONNREFUSED, EPIPE..., "EOF" when the server
    /// closed without answering and without a reset, "timeout".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_loaded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Counts over a whole run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeSummary {
    pub requests: u64,
    pub ok: u64,
    pub http_errors: BTreeMap<u16, u64>,
    pub connection_errors: BTreeMap<String, u64>,
    pub first_connection_error_ms: Option<f64>,
    pub max_models_loaded: Option<u64>,
    pub health_p50_ms: Option<f64>,
    pub health_p99_ms: Option<f64>,
}

impl ProbeSummary {
    pub fn from_records(records: &[ProbeRecord]) -> Self {
        let mut s = Self::default();
        let mut health_latencies = Vec::new();
        for r in records {
            s.requests += 1;
            match r.outcome.as_str() {
                "ok" => s.ok += 1,
                "http" => *s.http_errors.entry(r.status.unwrap_or(0)).or_default() += 1,
                _ => {
                    *s.connection_errors.entry(r.errno.clone().unwrap_or_else(|| "other".into())).or_default() += 1;
                    s.first_connection_error_ms.get_or_insert(r.t_ms);
                }
            }
            if let Some(n) = r.models_loaded {
                s.max_models_loaded = Some(s.max_models_loaded.map_or(n, |m| m.max(n)));
            }
            if r.op == "health" && r.outcome == "ok" {
                health_latencies.push(r.latency_ms);
            }
        }
        health_latencies.sort_by(f64::total_cmp);
        s.health_p50_ms = percentile(&health_latencies, 0.50);
        s.health_p99_ms = percentile(&health_latencies, 0.99);
        s
    }

    /// Requests that got no HTTP answer at all.
    pub fn connection_error_count(&self) -> u64 {
        self.connection_errors.values().sum()
    }

    pub fn human(&self) -> String {
        let errors = if self.connection_errors.is_empty() {
            "no connection errors".to_string()
        } else {
            self.connection_errors.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
        };
        let http = if self.http_errors.is_empty() {
            String::new()
        } else {
            format!(
                ", HTTP errors: {}",
                self.http_errors.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", ")
            )
        };
        let first = self.first_connection_error_ms.map(|t| format!(" (first after {:.1} s)", t / 1000.0)).unwrap_or_default();
        format!(
            "probe: {} requests, {} ok{http}; {errors}{first}; health p50 {} p99 {}; max models_loaded {}",
            self.requests,
            self.ok,
            self.health_p50_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
            self.health_p99_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
            self.max_models_loaded.map_or("-".into(), |v| v.to_string()),
        )
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).copied()
}

/// The name of an errno the way `errno(3)` spells it.
pub fn errno_name(code: i32) -> String {
    let name = match code {
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPIPE => "EPIPE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EMFILE => "EMFILE",
        other => return format!("errno {other}"),
    };
    name.to_string()
}

/// The errno behind an error, searched through its whole source chain.
fn errno_in(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        current = e.source();
    }
    None
}

/// One HTTP/1.1 request on a fresh connection, as the original test client made them.
pub async fn request(addr: SocketAddr, host: &str, method: &str, path: &str, body: Option<String>, timeout: Duration) -> Attempt {
    match tokio::time::timeout(timeout, attempt(addr, host, method, path, body)).await {
        Ok(a) => a,
        Err(_) => Attempt::Failed { errno: "timeout".into(), error: format!("no answer within {timeout:?}") },
    }
}

/// The result of one request.
#[derive(Debug)]
pub enum Attempt {
    Answered { status: u16, body: String },
    Failed { errno: String, error: String },
}

async fn attempt(addr: SocketAddr, host: &str, method: &str, path: &str, body: Option<String>) -> Attempt {
    let failed = |e: &(dyn std::error::Error + 'static)| Attempt::Failed {
        errno: errno_in(e).map(errno_name).unwrap_or_else(|| "EOF".into()),
        error: e.to_string(),
    };
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return failed(&e),
    };
    let driver = tokio::spawn(connection);
    let mut builder = hyper::Request::builder().method(method).uri(path).header("host", host);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = match builder.body(Full::new(Bytes::from(body.unwrap_or_default()))) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed { errno: "EINVAL".into(), error: e.to_string() },
    };
    let outcome = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(bytes) => Attempt::Answered { status, body: String::from_utf8_lossy(&bytes.to_bytes()).into_owned() },
                Err(e) => failed(&e),
            }
        }
        Err(e) => {
            // hyper reports "connection closed"; the errno, if any, is on the connection task.
            match tokio::time::timeout(Duration::from_millis(200), driver).await {
                Ok(Ok(Err(conn_error))) if errno_in(&conn_error).is_some() => return failed(&conn_error),
                _ => failed(&e),
            }
        }
    };
    outcome
}

fn record(start: Instant, op: &str, started: Instant, attempt: Attempt) -> ProbeRecord {
    let unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let mut r = ProbeRecord {
        t_ms: started.duration_since(start).as_secs_f64() * 1000.0,
        unix_s,
        op: op.to_string(),
        outcome: String::new(),
        status: None,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        errno: None,
        error: None,
        models_loaded: None,
        body: None,
    };
    match attempt {
        Attempt::Answered { status, body } => {
            r.status = Some(status);
            r.outcome = if (200..300).contains(&status) { "ok" } else { "http" }.into();
            let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            if op == "health" {
                r.models_loaded = json.as_ref().and_then(|j| j.get("models_loaded")).and_then(|v| v.as_u64());
            }
            if r.outcome != "ok" || op == "translate" {
                r.body = Some(body.chars().take(300).collect());
            }
        }
        Attempt::Failed { errno, error } => {
            r.outcome = "error".into();
            r.errno = Some(errno);
            r.error = Some(error);
        }
    }
    r
}

/// Runs until the duration ends or `stop` resolves; writes each record as a JSON line to
/// `out` and returns the summary (also written, as the last line).
pub async fn run(config: ProbeConfig, out: &mut dyn Write, stop: impl std::future::Future<Output = ()>) -> std::io::Result<ProbeSummary> {
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<ProbeRecord>();
    let health = {
        let (tx, config) = (tx.clone(), config.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = Instant::now();
                let a = request(config.addr, &config.host, "GET", "/health", None, config.timeout).await;
                if tx.send(record(start, "health", t, a)).is_err() {
                    break;
                }
            }
        })
    };
    let translate = (!config.translate_interval.is_zero()).then(|| {
        let (tx, config) = (tx.clone(), config.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"text": config.text, "source": config.source, "target": config.target, "model": config.model}).to_string();
            let mut tick = tokio::time::interval(config.translate_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t = Instant::now();
                let a = request(config.addr, &config.host, "POST", "/translate", Some(body.clone()), config.timeout).await;
                if tx.send(record(start, "translate", t, a)).is_err() {
                    break;
                }
            }
        })
    });
    drop(tx);
    let deadline = async {
        match config.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop, deadline);
    let mut records = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut deadline => break,
            r = rx.recv() => match r {
                Some(r) => {
                    writeln!(out, "{}", serde_json::to_string(&r).map_err(std::io::Error::other)?)?;
                    out.flush()?;
                    records.push(r);
                }
                None => break,
            },
        }
    }
    health.abort();
    if let Some(t) = translate {
        t.abort();
    }
    let summary = ProbeSummary::from_records(&records);
    writeln!(out, "{}", serde_json::json!({"summary": summary}))?;
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_match_the_kernel_codes() {
        assert_eq!(errno_name(104), "ECONNRESET");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(9999), "errno 9999");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match request(addr, "x", "GET", "/health", None, Duration::from_secs(2)).await {
            Attempt::Failed { errno, .. } => assert_eq!(errno, "ECONNREFUSED"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_server_that_resets_is_reported_as_econnreset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // Read the request, then close with SO_LINGER 0: the kernel sends a RST.
            let mut buf = [0u8; 1024];
            stream.readable().await.unwrap();
            let _ = stream.try_read(&mut buf);
            let std_stream = stream.into_std().unwrap();
            let sock = std::os::fd::AsRawFd::as_raw_fd(&std_stream);
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: valid fd and a correctly sized linger struct.
            unsafe {
                libc::setsockopt(sock, libc::SOL_SOCKET, libc::SO_LINGER, (&linger as *const libc::linger).cast(), size_of::<libc::linger>() as u32);
            }
            drop(std_stream);
        });
        let a = request(addr, "x", "GET", "/health", None, Duration::from_secs(2)).await;
        server.await.unwrap();
        match a {
            Attempt::Failed { errno, .. } => assert_eq!(errno, "ECONNRESET"),
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    #[test]
    fn summary_counts_outcomes_and_health_latency() {
        let mk = |op: &str, outcome: &str, status: Option<u16>, errno: Option<&str>, t: f64| ProbeRecord {
            t_ms: t,
            unix_s: 0.0,
            op: op.into(),
            outcome: outcome.into(),
            status,
            latency_ms: t / 10.0,
            errno: errno.map(String::from),
            error: None,
            models_loaded: (op == "health" && outcome == "ok").then_some(1),
            body: None,
        };
        let records = vec![
            mk("health", "ok", Some(200), None, 10.0),
            mk("translate", "http", Some(409), None, 20.0),
            mk("health", "error", None, Some("ECONNRESET"), 30.0),
            mk("health", "error", None, Some("ECONNREFUSED"), 40.0),
            mk("health", "error", None, Some("ECONNREFUSED"), 50.0),
        ];
        let s = ProbeSummary::from_records(&records);
        assert_eq!((s.requests, s.ok, s.connection_error_count()), (5, 1, 3));
        assert_eq!(s.http_errors.get(&409), Some(&1));
        assert_eq!(s.connection_errors.get("ECONNREFUSED"), Some(&2));
        assert_eq!(s.first_connection_error_ms, Some(30.0));
        assert_eq!(s.max_models_loaded, Some(1));
        assert_eq!(s.health_p50_ms, Some(1.0));
        assert!(s.human().contains("ECONNRESET x1"));
    }
}

//! OTLP/HTTP log export (protobuf): the agent's records go to an OpenTelemetry collector.
//!
//! The agent must never stall on its collector: [`OtlpExporter::send`] only pushes onto a
//! bounded queue, and a sender task on the tokio runtime does the network work. When the
//! collector is slow or away, the queue drops its oldest records (counted in
//! [`OtlpStats::dropped`]) so that memory stays bounded, and the sender retries the batch
//! it holds with exponential backoff. Only plain http is spoken: TLS, authentication and
//! fan-out belong to a local collector, which keeps this side small.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{self as proto, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::Notify;

/// The path OTLP/HTTP collectors take logs on; added when the URL names only the host.
const LOGS_PATH: &str = "/v1/logs";
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A collector's answer is a small protobuf; more than this is not a collector, and the
/// connection is dropped rather than read on.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// An attribute value: what the agent's records carry (OTLP knows more kinds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
    Fatal,
}

impl Severity {
    /// OTLP's severity_number: the first number of each range, as the log data model maps
    /// plain INFO/WARN/ERROR/FATAL.
    pub fn number(self) -> SeverityNumber {
        match self {
            Severity::Info => SeverityNumber::Info,
            Severity::Warn => SeverityNumber::Warn,
            Severity::Error => SeverityNumber::Error,
            Severity::Fatal => SeverityNumber::Fatal,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Wall-clock time of the event, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub severity: Severity,
    pub body: String,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// Records waiting for the sender, beyond the batch it holds; past it the oldest go.
    pub queue_capacity: usize,
    /// Records per POST.
    pub batch: usize,
    /// For one POST: connect, send, and the answer.
    pub timeout: Duration,
}

impl Default for OtlpOptions {
    fn default() -> Self {
        OtlpOptions { queue_capacity: 4096, batch: 512, timeout: Duration::from_secs(5) }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtlpStats {
    /// Records the collector accepted (2xx).
    pub sent: u64,
    /// Records lost: pushed out of a full queue, or in a batch the collector refused
    /// with a 4xx (other than 429).
    pub dropped: u64,
    /// POSTs that failed: no connection, no answer in time, or a non-2xx answer.
    pub failed_posts: u64,
    /// Records not yet accepted: the queue and the batch the sender holds.
    pub queued: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {url:?} is not a usable URL: {reason}; give one like http://127.0.0.1:4318/v1/logs")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "OTLP endpoint {url:?} uses https, which tracer does not speak (it carries no TLS): run a local OpenTelemetry \
         Collector on this host, point tracer at it over http (e.g. http://127.0.0.1:4318/v1/logs) and let the \
         collector forward over TLS"
    )]
    Https { url: String },
    #[error("OTLP export options: {0}")]
    InvalidOptions(&'static str),
    #[error("the OTLP exporter was started outside a tokio runtime: start it from async code, inside the runtime its sender task will run on")]
    NoRuntime,
}

/// Where the POSTs go, checked once at start so that the sender cannot fail on it later.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    /// The URL as POSTed to, path included: for messages.
    url: String,
    /// For connect: an IPv6 literal without its brackets.
    host: String,
    port: u16,
    /// For the Host header: as written in the URL.
    authority: String,
    /// Path and query.
    target: String,
}

fn parse_endpoint(url: &str) -> Result<Endpoint, OtlpError> {
    let invalid = |reason: String| OtlpError::InvalidUrl { url: url.to_string(), reason };
    let uri: Uri = url.trim().parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => return Err(OtlpError::Https { url: url.to_string() }),
        Some(s) => return Err(invalid(format!("the scheme {s}:// is not supported, only http://"))),
        None => return Err(invalid("it has no scheme: write http:// in front".into())),
    }
    let authority = uri.authority().ok_or_else(|| invalid("it names no host".into()))?;
    // Credentials in the URL would need an Authorization header we do not send: silently
    // ignoring them would turn into 401s that look like a collector fault.
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not supported: let a local collector authenticate".into()));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("it names no host".into()));
    }
    let port = authority.port_u16().unwrap_or(80);
    let (path, query) = match uri.path_and_query() {
        Some(pq) => (pq.path(), pq.query()),
        None => ("", None),
    };
    let path = if path.is_empty() || path == "/" { LOGS_PATH } else { path };
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    Ok(Endpoint {
        url: format!("http://{}{target}", authority.as_str()),
        host: host.to_string(),
        port,
        authority: authority.as_str().to_string(),
        target,
    })
}

/// What the handles and the sender share. The queue and the count of records in the
/// sender's hands sit under one lock so that "nothing left" is never seen between the two.
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    batch: usize,
    timeout: Duration,
    /// New records (send -> sender).
    work: Notify,
    /// Cut a backoff short: a flush wants the records out, or the last handle is gone.
    nudge: Notify,
    /// A batch was finished, accepted or not (sender -> flush).
    progress: Notify,
    closed: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    failed_posts: AtomicU64,
}

struct State {
    queue: VecDeque<LogRecord>,
    in_flight: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a queue that is still a queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_batch(&self) -> Vec<LogRecord> {
        let mut state = self.lock();
        let n = state.queue.len().min(self.batch);
        state.in_flight = n;
        state.queue.drain(..n).collect()
    }

    fn finish_batch(&self) {
        self.lock().in_flight = 0;
        self.progress.notify_waiters();
    }

    fn idle(&self) -> bool {
        let state = self.lock();
        state.queue.is_empty() && state.in_flight == 0
    }
}

/// Tells the sender that no handle is left, so that it does not retry for nobody.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
        self.0.nudge.notify_one();
    }
}

/// A handle on the exporter; clones share one queue and one sender. When the last one
/// goes, the sender sends what is queued if the collector takes it, and stops at the
/// first failure.
#[derive(Clone)]
pub struct OtlpExporter {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
    endpoint: Arc<str>,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter").field("endpoint", &self.endpoint).field("stats", &self.stats()).finish()
    }
}

impl OtlpExporter {
    /// Validates the URL (http only; no path or "/" means `/v1/logs`) and the options, and
    /// spawns the sender on the current tokio runtime.
    pub fn start(url: &str, resource: Vec<(String, AttrValue)>, opts: OtlpOptions) -> Result<Self, OtlpError> {
        let endpoint = parse_endpoint(url)?;
        if opts.queue_capacity == 0 {
            return Err(OtlpError::InvalidOptions("the queue capacity is 0: give it room for at least one record"));
        }
        if opts.batch == 0 {
            return Err(OtlpError::InvalidOptions("the batch size is 0: a POST carries at least one record"));
        }
        if opts.timeout.is_zero() {
            return Err(OtlpError::InvalidOptions("the POST timeout is 0: no collector answers that fast"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: VecDeque::with_capacity(opts.queue_capacity.min(4096)), in_flight: 0 }),
            capacity: opts.queue_capacity,
            batch: opts.batch,
            timeout: opts.timeout,
            work: Notify::new(),
            nudge: Notify::new(),
            progress: Notify::new(),
            closed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed_posts: AtomicU64::new(0),
        });
        let exporter = OtlpExporter {
            shared: shared.clone(),
            _closer: Arc::new(Closer(shared.clone())),
            endpoint: endpoint.url.as_str().into(),
        };
        runtime.spawn(run_sender(shared, endpoint, resource));
        Ok(exporter)
    }

    /// The URL the records are POSTed to, `/v1/logs` added where it was left out.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues a record. Never blocks on the network: a full queue loses its oldest record
    /// (counted), since the newest say the most about the host's state now.
    pub fn send(&self, rec: LogRecord) {
        let mut state = self.shared.lock();
        if state.queue.len() >= self.shared.capacity {
            state.queue.pop_front();
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.queue.push_back(rec);
        drop(state);
        self.shared.work.notify_one();
    }

    pub fn stats(&self) -> OtlpStats {
        let queued = {
            let state = self.shared.lock();
            state.queue.len() + state.in_flight
        };
        OtlpStats {
            sent: self.shared.sent.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed_posts: self.shared.failed_posts.load(Ordering::Relaxed),
            queued,
        }
    }

    /// Best effort at shutdown: waits up to `timeout` for the queue and the batch in hand
    /// to be done with. A sender waiting out a backoff tries again at once.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.nudge.notify_one();
        loop {
            // Registered before the check, so that a batch finished in between is not missed.
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.shared.idle() {
                return;
            }
            tokio::select! {
                _ = &mut progress => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// The request body for `records`: one ResourceLogs, one ScopeLogs named "tracer".
pub fn encode(records: &[LogRecord], resource: &[(String, AttrValue)]) -> Vec<u8> {
    export_request(records, resource).encode_to_vec()
}

fn export_request(records: &[LogRecord], resource: &[(String, AttrValue)]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: key_values(resource), ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "tracer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records.iter().map(proto_record).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn proto_record(rec: &LogRecord) -> proto::LogRecord {
    proto::LogRecord {
        time_unix_nano: rec.ts_ns,
        // The agent observes the event as it happens; the collector's own observation
        // time would only add its queueing delay.
        observed_time_unix_nano: rec.ts_ns,
        severity_number: rec.severity.number() as i32,
        severity_text: rec.severity.text().into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(rec.body.clone())) }),
        attributes: key_values(&rec.attributes),
        ..Default::default()
    }
}

fn key_values(attrs: &[(String, AttrValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: Some(AnyValue {
                value: Some(match value {
                    AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
                    AttrValue::Int(i) => any_value::Value::IntValue(*i),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

enum Outcome {
    Accepted,
    /// The collector will not take this batch, however often it is sent.
    Rejected(StatusCode),
    Retry {
        cause: String,
        retry_after: Option<Duration>,
    },
}

async fn run_sender(shared: Arc<Shared>, endpoint: Endpoint, resource: Vec<(String, AttrValue)>) {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    // Whether the last POST got an answer that was not a retryable failure: one warning
    // when this turns false and one info when it turns true again, not one per retry.
    let mut reachable = true;
    let mut warned_rejected = false;
    loop {
        let batch = shared.take_batch();
        if batch.is_empty() {
            if shared.closed.load(Ordering::Relaxed) {
                return;
            }
            tokio::select! {
                _ = shared.work.notified() => {}
                _ = shared.nudge.notified() => {}
            }
            continue;
        }
        let count = batch.len() as u64;
        // Encoded once: retries resend the same bytes, and the records themselves go.
        let body = Bytes::from(encode(&batch, &resource));
        drop(batch);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match post(&mut conn, &endpoint, body.clone(), shared.timeout).await {
                Outcome::Accepted => {
                    shared.sent.fetch_add(count, Ordering::Relaxed);
                    if !reachable {
                        reachable = true;
                        tracing::info!(
                            "OTLP collector at {} takes logs again ({} records dropped so far)",
                            endpoint.url,
                            shared.dropped.load(Ordering::Relaxed)
                        );
                    }
                    break;
                }
                Outcome::Rejected(status) => {
                    shared.failed_posts.fetch_add(1, Ordering::Relaxed);
                    shared.dropped.fetch_add(count, Ordering::Relaxed);
                    reachable = true;
                    // A 4xx comes back for every batch alike (a wrong path, a collector
                    // without a logs pipeline): once is enough to say, the count says the rest.
                    if !warned_rejected {
                        warned_rejected = true;
                        tracing::warn!(
                            "OTLP collector at {} refused a batch of {count} records with HTTP {status}: they are \
                             dropped, not retried; check the URL (OTLP/HTTP logs go to /v1/logs) and that the \
                             collector has a logs pipeline with an otlp receiver (further refusals are only counted)",
                            endpoint.url
                        );
                    }
                    break;
                }
                Outcome::Retry { cause, retry_after } => {
                    shared.failed_posts.fetch_add(1, Ordering::Relaxed);
                    if reachable {
                        reachable = false;
                        tracing::warn!(
                            "OTLP collector at {} does not take logs ({cause}): retrying with backoff up to {}s; \
                             meanwhile up to {} records wait and the oldest are dropped",
                            endpoint.url,
                            MAX_BACKOFF.as_secs(),
                            shared.capacity
                        );
                    }
                    if shared.closed.load(Ordering::Relaxed) {
                        return;
                    }
                    // A collector asking for a longer pause gets it, within our own cap.
                    let delay = retry_after.map_or(backoff, |after| after.clamp(backoff, MAX_BACKOFF));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shared.nudge.notified() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        shared.finish_batch();
    }
}

/// One POST, on the kept connection when it is still open.
async fn post(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    endpoint: &Endpoint,
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    let answer = match tokio::time::timeout(timeout, exchange(conn, endpoint, body)).await {
        Ok(answer) => answer,
        Err(_) => Err(PostError::Timeout(timeout)),
    };
    match answer {
        Ok((status, _)) if status.is_success() => Outcome::Accepted,
        Ok((status, _)) if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
            Outcome::Rejected(status)
        }
        Ok((status, retry_after)) => Outcome::Retry { cause: format!("HTTP {status}"), retry_after },
        Err(e) => {
            // Whatever state the connection is in after a failure, a fresh one is surer.
            *conn = None;
            Outcome::Retry { cause: e.to_string(), retry_after: None }
        }
    }
}

async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    endpoint: &Endpoint,
    body: Bytes,
) -> Result<(StatusCode, Option<Duration>), PostError> {
    let (mut sender, mut reused) = match conn.take() {
        Some(sender) if !sender.is_closed() => (sender, true),
        _ => (connect(endpoint).await?, false),
    };
    let response = loop {
        let request = Request::post(endpoint.target.as_str())
            .header(HOST, endpoint.authority.as_str())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body.clone()))?;
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(request).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(response) => break response,
            // A kept connection may have been closed by the collector (an idle timeout)
            // just as we used it: one fresh connection gets the batch, rather than a failed
            // POST, a warning and a backoff for nothing. Sending it again is safe: OTLP
            // delivery is at-least-once anyway.
            Err(_) if reused => {
                sender = connect(endpoint).await?;
                reused = false;
            }
            Err(e) => return Err(e.into()),
        }
    };
    *conn = Some(sender);
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read to the end so that the connection can carry the next POST; an answer too big
    // or cut short leaves it unusable.
    if Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect().await.is_err() {
        *conn = None;
    }
    Ok((status, retry_after))
}

async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, PostError> {
    let stream =
        tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(PostError::Connect)?;
    // Batches are written whole; waiting for ACKs of the previous segment only adds latency.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection's own error reaches the request that was on it; nothing to add here.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Incoming;
    use hyper::{Method, Response};
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            ts_ns: 1_700_000_000_000_000_000 + i as u64,
            severity: Severity::Warn,
            body: format!("r{i}"),
            attributes: vec![("n".into(), AttrValue::Int(i as i64))],
        }
    }

    fn resource() -> Vec<(String, AttrValue)> {
        vec![("service.name".into(), "tracer".into()), ("host.name".into(), "box1".into())]
    }

    /// A collector stand-in: answers each POST with the next scripted status (200 once the
    /// script is done) and keeps the requests it answered 2xx, decoded.
    #[derive(Default)]
    struct Collector {
        script: Mutex<VecDeque<u16>>,
        requests: AtomicUsize,
        accepted: Mutex<Vec<ExportLogsServiceRequest>>,
        seen: Mutex<Vec<(Method, String, String)>>,
        /// Answer with `Connection: close`, as some proxies and collectors do.
        close: AtomicBool,
    }

    impl Collector {
        fn with_script(statuses: &[u16]) -> Arc<Self> {
            Arc::new(Collector { script: Mutex::new(statuses.iter().copied().collect()), ..Default::default() })
        }

        fn bodies(&self) -> Vec<String> {
            let accepted = self.accepted.lock().unwrap();
            accepted
                .iter()
                .flat_map(|r| &r.resource_logs)
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|r| match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => panic!("body {other:?}"),
                })
                .collect()
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        async fn answer(
            self: Arc<Self>,
            req: Request<Incoming>,
        ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
            let content_type =
                req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            self.seen.lock().unwrap().push((req.method().clone(), req.uri().path().to_string(), content_type));
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            self.requests.fetch_add(1, Ordering::SeqCst);
            let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
            if status == 200 {
                let decoded = ExportLogsServiceRequest::decode(body).expect("the exporter's body decodes");
                self.accepted.lock().unwrap().push(decoded);
            }
            let mut response = Response::builder().status(status);
            if self.close.load(Ordering::SeqCst) {
                response = response.header(hyper::header::CONNECTION, "close");
            }
            Ok(response.body(Full::new(Bytes::new())).unwrap())
        }

        fn serve(self: &Arc<Self>, listener: TcpListener) {
            let collector = self.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { return };
                    let collector = collector.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| collector.clone().answer(req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
    }

    async fn listening(collector: &Arc<Collector>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        collector.serve(listener);
        format!("http://127.0.0.1:{port}")
    }

    async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn names(n: std::ops::Range<usize>) -> Vec<String> {
        n.map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn encode_round_trips_through_prost() {
        let records = vec![
            LogRecord {
                ts_ns: 1_700_000_000_123_456_789,
                severity: Severity::Info,
                body: "started".into(),
                attributes: vec![("pid".into(), AttrValue::Int(4711)), ("comm".into(), "server".into())],
            },
            LogRecord { ts_ns: 2, severity: Severity::Warn, body: "w".into(), attributes: vec![] },
            LogRecord { ts_ns: 3, severity: Severity::Error, body: "e".into(), attributes: vec![] },
            LogRecord { ts_ns: 4, severity: Severity::Fatal, body: "oom kill".into(), attributes: vec![] },
        ];
        let bytes = encode(&records, &resource());
        let decoded = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, export_request(&records, &resource()));

        assert_eq!(decoded.resource_logs.len(), 1);
        let rl = &decoded.resource_logs[0];
        let res = rl.resource.as_ref().unwrap();
        assert_eq!(res.attributes.len(), 2);
        assert_eq!(res.attributes[0].key, "service.name");
        assert_eq!(res.attributes[1].value.as_ref().unwrap().value, Some(any_value::Value::StringValue("box1".into())));
        assert_eq!(rl.scope_logs.len(), 1);
        assert_eq!(rl.scope_logs[0].scope.as_ref().unwrap().name, "tracer");
        let logs = &rl.scope_logs[0].log_records;
        assert_eq!(logs.len(), 4);
        assert_eq!(logs[0].time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(logs[0].observed_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(logs[0].body, Some(AnyValue { value: Some(any_value::Value::StringValue("started".into())) }));
        assert_eq!(logs[0].attributes[0].key, "pid");
        assert_eq!(logs[0].attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::IntValue(4711)));
        assert_eq!(
            logs[0].attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("server".into()))
        );
        let severities: Vec<_> = logs.iter().map(|l| (l.severity_number, l.severity_text.as_str())).collect();
        assert_eq!(severities, [(9, "INFO"), (13, "WARN"), (17, "ERROR"), (21, "FATAL")]);
    }

    #[tokio::test]
    async fn records_reach_a_local_collector() {
        let collector = Collector::with_script(&[]);
        let url = listening(&collector).await;
        let opts = OtlpOptions { batch: 2, ..Default::default() };
        let exporter = OtlpExporter::start(&url, resource(), opts).unwrap();
        assert_eq!(exporter.endpoint(), format!("{url}/v1/logs"));
        for i in 0..5 {
            exporter.send(record(i));
        }
        exporter.flush(Duration::from_secs(10)).await;

        assert_eq!(collector.bodies(), names(0..5));
        assert_eq!(collector.requests(), 3, "5 records in batches of 2");
        for (method, path, content_type) in collector.seen.lock().unwrap().iter() {
            assert_eq!(
                (method, path.as_str(), content_type.as_str()),
                (&Method::POST, "/v1/logs", "application/x-protobuf")
            );
        }
        let accepted = collector.accepted.lock().unwrap();
        let first = &accepted[0].resource_logs[0];
        assert_eq!(first.resource.as_ref().unwrap().attributes[0].key, "service.name");
        assert_eq!(first.scope_logs[0].log_records[1].severity_number, 13);
        drop(accepted);
        assert_eq!(exporter.stats(), OtlpStats { sent: 5, dropped: 0, failed_posts: 0, queued: 0 });
    }

    #[tokio::test]
    async fn a_collector_down_at_first_gets_the_records_after_retries() {
        // Reserved then released: connects are refused until the collector binds it again.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let exporter =
            OtlpExporter::start(&format!("http://127.0.0.1:{port}/"), resource(), OtlpOptions::default()).unwrap();
        for i in 0..3 {
            exporter.send(record(i));
        }
        wait_until("two failed POSTs", Duration::from_secs(10), || exporter.stats().failed_posts >= 2).await;
        assert_eq!(exporter.stats().sent, 0);
        assert_eq!(exporter.stats().queued, 3);

        let collector = Collector::with_script(&[]);
        collector.serve(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
        exporter.flush(Duration::from_secs(10)).await;

        assert_eq!(collector.bodies(), names(0..3));
        let stats = exporter.stats();
        assert_eq!((stats.sent, stats.dropped, stats.queued), (3, 0, 0));
        assert!(stats.failed_posts >= 2, "{stats:?}");
    }

    #[tokio::test]
    async fn retryable_answers_are_retried_until_accepted() {
        let collector = Collector::with_script(&[503, 429, 502]);
        let url = listening(&collector).await;
        let exporter = OtlpExporter::start(&url, resource(), OtlpOptions::default()).unwrap();
        for i in 0..4 {
            exporter.send(record(i));
        }
        wait_until("the batch accepted", Duration::from_secs(10), || exporter.stats().sent == 4).await;

        assert_eq!(collector.requests(), 4, "three refusals, then the same batch accepted");
        assert_eq!(collector.bodies(), names(0..4));
        assert_eq!(exporter.stats(), OtlpStats { sent: 4, dropped: 0, failed_posts: 3, queued: 0 });
    }

    #[tokio::test]
    async fn a_collector_closing_each_connection_costs_no_failed_post() {
        let collector = Collector::with_script(&[]);
        collector.close.store(true, Ordering::SeqCst);
        let url = listening(&collector).await;
        let exporter = OtlpExporter::start(&url, resource(), OtlpOptions { batch: 1, ..Default::default() }).unwrap();
        for i in 0..20 {
            exporter.send(record(i));
        }
        exporter.flush(Duration::from_secs(10)).await;
        assert_eq!(collector.bodies(), names(0..20));
        assert_eq!(exporter.stats(), OtlpStats { sent: 20, dropped: 0, failed_posts: 0, queued: 0 });
    }

    /// A collector that answers one request per connection and then hangs up without
    /// saying so beforehand, as when its idle timeout fires just as the next POST comes.
    #[tokio::test]
    async fn a_collector_hanging_up_after_each_answer_costs_no_failed_post() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let bodies = bodies.clone();
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut request = Vec::new();
                    let mut buf = [0; 4096];
                    let body = loop {
                        let n = stream.read(&mut buf).await.unwrap();
                        assert!(n > 0, "the request was cut short");
                        request.extend_from_slice(&buf[..n]);
                        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap();
                        if request.len() >= end + 4 + length {
                            break request[end + 4..end + 4 + length].to_vec();
                        }
                    };
                    let decoded = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
                    let record = &decoded.resource_logs[0].scope_logs[0].log_records[0];
                    bodies.lock().unwrap().push(record.body.clone().unwrap());
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                    // Long enough for the exporter's next POST to come in on this connection, unread.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let exporter = OtlpExporter::start(&url, resource(), OtlpOptions { batch: 1, ..Default::default() }).unwrap();
        for i in 0..20 {
            exporter.send(record(i));
        }
        exporter.flush(Duration::from_secs(10)).await;
        let bodies: Vec<String> = bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| match &b.value {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("body {other:?}"),
            })
            .collect();
        assert_eq!(bodies, names(0..20));
        assert_eq!(exporter.stats(), OtlpStats { sent: 20, dropped: 0, failed_posts: 0, queued: 0 });
    }

    #[tokio::test]
    async fn a_4xx_drops_the_batch_without_retrying() {
        let collector = Collector::with_script(&[400]);
        let url = listening(&collector).await;
        let exporter = OtlpExporter::start(&url, resource(), OtlpOptions::default()).unwrap();
        for i in 0..3 {
            exporter.send(record(i));
        }
        exporter.flush(Duration::from_secs(10)).await;
        assert_eq!(exporter.stats(), OtlpStats { sent: 0, dropped: 3, failed_posts: 1, queued: 0 });
        // Longer than the first backoff: a retry would have come by now.
        tokio::time::sleep(FIRST_BACKOFF * 3).await;
        assert_eq!(collector.requests(), 1);

        // The exporter goes on with the next records.
        exporter.send(record(3));
        exporter.flush(Duration::from_secs(10)).await;
        assert_eq!(collector.bodies(), names(3..4));
        assert_eq!(exporter.stats(), OtlpStats { sent: 1, dropped: 3, failed_posts: 1, queued: 0 });
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let collector = Collector::with_script(&[]);
        let url = listening(&collector).await;
        let opts = OtlpOptions { queue_capacity: 4, batch: 2, ..Default::default() };
        let exporter = OtlpExporter::start(&url, resource(), opts).unwrap();
        // A current-thread runtime: the sender cannot take anything before the first await.
        for i in 0..10 {
            exporter.send(record(i));
        }
        assert_eq!(exporter.stats(), OtlpStats { sent: 0, dropped: 6, failed_posts: 0, queued: 4 });
        exporter.flush(Duration::from_secs(10)).await;

        assert_eq!(collector.bodies(), names(6..10));
        assert_eq!(exporter.stats(), OtlpStats { sent: 4, dropped: 6, failed_posts: 0, queued: 0 });
    }

    #[tokio::test]
    async fn flush_gives_up_at_its_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let exporter =
            OtlpExporter::start(&format!("http://127.0.0.1:{port}"), resource(), OtlpOptions::default()).unwrap();
        exporter.send(record(0));
        let started = std::time::Instant::now();
        exporter.flush(Duration::from_millis(300)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(exporter.stats().queued, 1);
    }

    #[test]
    fn urls_are_checked_and_completed() {
        let ep = parse_endpoint("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            ep,
            Endpoint {
                url: "http://127.0.0.1:4318/v1/logs".into(),
                host: "127.0.0.1".into(),
                port: 4318,
                authority: "127.0.0.1:4318".into(),
                target: "/v1/logs".into(),
            }
        );
        assert_eq!(parse_endpoint("http://collector:4318/").unwrap().url, "http://collector:4318/v1/logs");
        let custom = parse_endpoint("HTTP://collector/otlp/logs?tenant=a").unwrap();
        assert_eq!((custom.port, custom.target.as_str()), (80, "/otlp/logs?tenant=a"));
        let v6 = parse_endpoint("http://[::1]:4318").unwrap();
        assert_eq!((v6.host.as_str(), v6.authority.as_str()), ("::1", "[::1]:4318"));

        let https = parse_endpoint("https://otel.example.com/v1/logs").unwrap_err();
        assert!(matches!(https, OtlpError::Https { .. }));
        let message = https.to_string();
        assert!(
            message.contains("https") && message.contains("local") && message.contains("http://127.0.0.1:4318"),
            "{message}"
        );

        for (url, says) in [
            ("127.0.0.1:4318", "no scheme"),
            ("ftp://collector/v1/logs", "ftp://"),
            ("http://user:secret@collector:4318", "credentials"),
            ("http://collector:4318/v 1", "not a usable URL"),
            ("", "not a usable URL"),
        ] {
            let e = parse_endpoint(url).unwrap_err();
            assert!(matches!(e, OtlpError::InvalidUrl { .. }), "{url}: {e:?}");
            let message = e.to_string();
            assert!(message.contains(says) && message.contains("http://127.0.0.1:4318/v1/logs"), "{url}: {message}");
        }
    }

    #[test]
    fn start_needs_a_runtime_and_sane_options() {
        let e = OtlpExporter::start("http://127.0.0.1:4318", vec![], OtlpOptions::default()).unwrap_err();
        assert!(matches!(e, OtlpError::NoRuntime), "{e:?}");
        assert!(e.to_string().contains("tokio runtime"));

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _inside = runtime.enter();
        let e = OtlpExporter::start("https://x", vec![], OtlpOptions::default()).unwrap_err();
        assert!(matches!(e, OtlpError::Https { .. }));
        for opts in [
            OtlpOptions { queue_capacity: 0, ..Default::default() },
            OtlpOptions { batch: 0, ..Default::default() },
            OtlpOptions { timeout: Duration::ZERO, ..Default::default() },
        ] {
            let e = OtlpExporter::start("http://127.0.0.1:4318", vec![], opts.clone()).unwrap_err();
            assert!(matches!(e, OtlpError::InvalidOptions(_)), "{opts:?}: {e:?}");
        }
        assert!(OtlpExporter::start("http://127.0.0.1:4318", vec![], OtlpOptions::default()).is_ok());
    }
}

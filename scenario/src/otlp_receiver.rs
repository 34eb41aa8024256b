//! A small OTLP/HTTP logs receiver: what the tracer's OTLP exporter talks to in the
//! end-to-end tests and under `cargo xtask run-workload`, so that they can check what a
//! real collector would have been given. It decodes with the same proto crate the tracer
//! encodes with, but knows nothing of the tracer's own types.
//!
//! It runs on its own thread with its own tokio runtime, because its callers (tests,
//! xtask) are plain synchronous code.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const LOGS_PATH: &str = "/v1/logs";
/// Far above any batch the tracer sends; a bigger body is a bug worth a 400.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One log record as received, flattened with its resource: what a test asserts on.
#[derive(Clone, Debug)]
pub struct ReceivedRecord {
    /// time_unix_nano, or observed_time_unix_nano where the sender left the former out.
    pub ts_ns: u64,
    pub severity_text: String,
    pub severity_number: i32,
    pub body: String,
    /// Values rendered as text: ints in decimal.
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    records: Mutex<Vec<ReceivedRecord>>,
    /// Signalled after each request, so that [`OtlpReceiver::wait_for`] need not poll.
    arrived: Condvar,
    requests: AtomicUsize,
}

impl Received {
    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedRecord>> {
        // A failed assertion in a test thread holding the lock must not hide the records.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiver; it stops, and frees its port, on drop.
pub struct OtlpReceiver {
    port: u16,
    received: Arc<Received>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Listens on 127.0.0.1 on a port the system picks.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Bound here rather than on the thread, so that a failure reaches the caller and
        // the port is known (and taking connections) before start returns.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let received = Arc::new(Received::default());
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new().name("otlp-receiver".into()).spawn({
            let received = received.clone();
            move || runtime.block_on(serve(listener, received, stopped))
        })?;
        Ok(OtlpReceiver { port, received, stop: Some(stop), thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to give the exporter.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{LOGS_PATH}", self.port)
    }

    /// Every record accepted so far, in arrival order.
    pub fn records(&self) -> Vec<ReceivedRecord> {
        self.received.lock().clone()
    }

    /// HTTP requests answered so far, refused ones (400) included.
    pub fn requests(&self) -> usize {
        self.received.requests.load(Ordering::SeqCst)
    }

    /// The records, as soon as `pred` holds for them or once `timeout` has passed
    /// (whichever comes first: the caller asserts on what it gets).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[ReceivedRecord]) -> bool) -> Vec<ReceivedRecord> {
        let deadline = Instant::now() + timeout;
        let mut records = self.received.lock();
        loop {
            if pred(&records) {
                return records.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return records.clone();
            }
            records =
                self.received.arrived.wait_timeout(records, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver").field("url", &self.url()).field("requests", &self.requests()).finish()
    }
}

async fn serve(listener: TcpListener, received: Arc<Received>, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let received = received.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| answer(req, received.clone()));
                        // A sender that hangs up mid-request is its own business.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
        }
    }
}

async fn answer(req: Request<Incoming>, received: Arc<Received>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match accept(req).await {
        Ok(records) => {
            received.lock().extend(records);
            let body = ExportLogsServiceResponse::default().encode_to_vec();
            response(StatusCode::OK, "application/x-protobuf", body)
        }
        Err(reason) => response(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", reason.into_bytes()),
    };
    received.requests.fetch_add(1, Ordering::SeqCst);
    received.arrived.notify_all();
    Ok(response)
}

fn response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

/// The records of a request, or why it is refused (the 400's body, for whoever debugs
/// the sender).
async fn accept(req: Request<Incoming>) -> Result<Vec<ReceivedRecord>, String> {
    if req.method() != Method::POST || req.uri().path() != LOGS_PATH {
        return Err(format!("{} {}: this receiver takes only POST {LOGS_PATH}", req.method(), req.uri().path()));
    }
    // Compressed or JSON bodies would fail to decode anyway; saying which is quicker to fix.
    if let Some(encoding) = req.headers().get(CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(format!("Content-Encoding {encoding:?} is not supported: send the protobuf uncompressed"));
        }
    }
    if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
        if content_type.as_bytes().starts_with(b"application/json") {
            return Err("OTLP/JSON is not supported: send application/x-protobuf".into());
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?
        .to_bytes();
    let request = ExportLogsServiceRequest::decode(body)
        .map_err(|e| format!("the body is not an ExportLogsServiceRequest: {e}"))?;
    Ok(flatten(request))
}

fn flatten(request: ExportLogsServiceRequest) -> Vec<ReceivedRecord> {
    let mut out = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = attributes(&resource_logs.resource.map(|r| r.attributes).unwrap_or_default());
        for scope_logs in resource_logs.scope_logs {
            for record in scope_logs.log_records {
                out.push(ReceivedRecord {
                    ts_ns: if record.time_unix_nano != 0 {
                        record.time_unix_nano
                    } else {
                        record.observed_time_unix_nano
                    },
                    severity_text: record.severity_text,
                    severity_number: record.severity_number,
                    body: record.body.as_ref().map(render).unwrap_or_default(),
                    attributes: attributes(&record.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(render).unwrap_or_default())).collect()
}

/// A value as text: strings as they are, numbers and booleans as Rust prints them, bytes
/// in hex, arrays and maps in brackets.
fn render(value: &AnyValue) -> String {
    use any_value::Value;
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(bytes)) => bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
        Some(Value::ArrayValue(array)) => {
            format!("[{}]", array.values.iter().map(render).collect::<Vec<_>>().join(", "))
        }
        Some(Value::KvlistValue(list)) => format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, kv.value.as_ref().map(render).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // Only profiles use string tables; a log sender using one is out of spec.
        Some(Value::StringValueStrindex(i)) => format!("<string table index {i}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn request(bodies: &[&str]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", any_value::Value::StringValue("tracer".into()))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "tracer".into(), ..Default::default() }),
                    log_records: bodies
                        .iter()
                        .enumerate()
                        .map(|(i, body)| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                            observed_time_unix_nano: 5,
                            severity_number: 17,
                            severity_text: "ERROR".into(),
                            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.to_string())) }),
                            attributes: vec![
                                kv("pid", any_value::Value::IntValue(4711)),
                                kv("comm", any_value::Value::StringValue("server".into())),
                                kv("raw", any_value::Value::BytesValue(vec![0xde, 0xad])),
                            ],
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// A raw HTTP/1.1 exchange: the status code and the body.
    fn post(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete answer");
        let head = String::from_utf8_lossy(&answer[..split]).to_string();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        (status, answer[split + 4..].to_vec())
    }

    #[test]
    fn accepts_an_export_request_and_decodes_its_records() {
        let receiver = OtlpReceiver::start().unwrap();
        assert_eq!(receiver.url(), format!("http://127.0.0.1:{}/v1/logs", receiver.port()));

        let (status, body) = post(receiver.port(), "POST", "/v1/logs", &request(&["first", "second"]).encode_to_vec());
        assert_eq!(status, 200);
        assert_eq!(ExportLogsServiceResponse::decode(body.as_slice()).unwrap(), ExportLogsServiceResponse::default());

        let records = receiver.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), ["first", "second"]);
        let first = &records[0];
        assert_eq!(first.ts_ns, 1_700_000_000_000_000_000);
        assert_eq!((first.severity_number, first.severity_text.as_str()), (17, "ERROR"));
        assert_eq!(first.attributes["pid"], "4711");
        assert_eq!(first.attributes["comm"], "server");
        assert_eq!(first.attributes["raw"], "dead");
        assert_eq!(first.resource, BTreeMap::from([("service.name".to_string(), "tracer".to_string())]));
        assert_eq!(receiver.requests(), 1);
    }

    #[test]
    fn refuses_what_is_not_an_export_request() {
        let receiver = OtlpReceiver::start().unwrap();
        let (status, body) = post(receiver.port(), "POST", "/v1/logs", b"\xff\xff\xff not protobuf");
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("not an ExportLogsServiceRequest"));
        let (status, _) = post(receiver.port(), "GET", "/v1/logs", b"");
        assert_eq!(status, 400);
        let (status, _) = post(receiver.port(), "POST", "/v1/traces", &request(&["x"]).encode_to_vec());
        assert_eq!(status, 400);
        assert!(receiver.records().is_empty());
        assert_eq!(receiver.requests(), 3);
    }

    #[test]
    fn wait_for_returns_when_the_records_are_there_or_at_the_timeout() {
        let receiver = OtlpReceiver::start().unwrap();
        let port = receiver.port();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            post(port, "POST", "/v1/logs", &request(&["a"]).encode_to_vec()).0
        });
        let started = Instant::now();
        let records = receiver.wait_for(Duration::from_secs(10), |r| r.iter().any(|r| r.body == "a"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(records.len(), 1);
        assert_eq!(poster.join().unwrap(), 200);

        let started = Instant::now();
        let records = receiver.wait_for(Duration::from_millis(200), |r| r.len() > 1);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn stops_on_drop() {
        let receiver = OtlpReceiver::start().unwrap();
        let port = receiver.port();
        drop(receiver);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}

//! `tracer watch --metrics ADDR`: the agent's counters and gauges in the Prometheus text
//! format, served at /metrics. Labels name services (the container identity of a cgroup),
//! signals, reasons and causes: never a pid, so a host that runs for months keeps a
//! bounded set of series.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicI64, AtomicU64},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::process::identity::Identity;

/// Distinct services a counter keeps its own series for; the rest are counted under
/// `service="other"`. A node runs dozens of pods at a time; thousands over its life.
pub const MAX_SERVICES: usize = 1000;

/// The labels every per-service series carries, from [`Identity`]; empty strings where
/// the cgroup does not say.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
    pub cgroup: String,
    pub runtime: String,
    pub pod_uid: String,
    pub container_id: String,
}

impl ServiceLabels {
    fn of(identity: Option<&Identity>) -> ServiceLabels {
        match identity {
            Some(i) => ServiceLabels {
                service: i.service(),
                cgroup: i.cgroup.clone(),
                runtime: i.runtime.as_str().to_string(),
                pod_uid: i.pod_uid.clone().unwrap_or_default(),
                container_id: i.container_id.clone().unwrap_or_default(),
            },
            None => ServiceLabels::unknown(),
        }
    }

    fn unknown() -> ServiceLabels {
        ServiceLabels {
            service: "unknown".into(),
            cgroup: String::new(),
            runtime: String::new(),
            pod_uid: String::new(),
            container_id: String::new(),
        }
    }

    fn other() -> ServiceLabels {
        ServiceLabels { service: "other".into(), ..ServiceLabels::unknown() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    #[prometheus(flatten)]
    service: ServiceLabels,
    signal: String,
    /// `kernel` (the OOM killer, a fault), `self`, or `process` (another process).
    sender_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    #[prometheus(flatten)]
    service: ServiceLabels,
    signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResetLabels {
    #[prometheus(flatten)]
    service: ServiceLabels,
    reason: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    #[prometheus(flatten)]
    service: ServiceLabels,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    #[prometheus(flatten)]
    service: ServiceLabels,
    /// `memory_cgroup`, `host` or `gpu`.
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    output: String,
}

pub struct Metrics {
    registry: Registry,
    oom_kills: Family<ServiceLabels, Counter>,
    fatal_signals: Family<SignalLabels, Counter>,
    exits_by_signal: Family<ExitLabels, Counter>,
    tcp_resets: Family<ResetLabels, Counter>,
    verdicts: Family<CauseLabels, Counter>,
    incidents: Family<ServiceLabels, Counter>,
    events_lost: Family<ProbeLabels, Counter>,
    dropped: Family<OutputLabels, Counter>,
    memcg_usage: Family<ServiceLabels, Gauge<i64, AtomicI64>>,
    memcg_limit: Family<ServiceLabels, Gauge<i64, AtomicI64>>,
    memcg_oom_events: Family<ServiceLabels, Gauge<i64, AtomicI64>>,
    limit_eta: Family<LimitLabels, Gauge<f64, AtomicU64>>,
    limit_headroom: Family<LimitLabels, Gauge<i64, AtomicI64>>,
    /// When each forecast's gauges were last set: they go once the danger has passed.
    forecasts_set: Mutex<HashMap<LimitLabels, Instant>>,
    /// The services with series of their own (see [`MAX_SERVICES`]), and which.
    services: Mutex<HashMap<ServiceLabels, Series>>,
}

/// The series one service has, so that they can all be dropped when it is gone: the
/// client's families cannot be listed by label.
#[derive(Debug)]
struct Series {
    touched: Instant,
    oom_kills: bool,
    incidents: bool,
    memcg: bool,
    signals: HashSet<(String, String)>,
    exits: HashSet<String>,
    /// Limits with forecast gauges.
    limits: HashSet<String>,
    resets: HashSet<(String, String)>,
    causes: HashSet<String>,
}

impl Series {
    fn new() -> Series {
        Series {
            touched: Instant::now(),
            oom_kills: false,
            incidents: false,
            memcg: false,
            signals: HashSet::new(),
            exits: HashSet::new(),
            limits: HashSet::new(),
            resets: HashSet::new(),
            causes: HashSet::new(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tracer");
        let m = Metrics {
            oom_kills: Family::default(),
            fatal_signals: Family::default(),
            exits_by_signal: Family::default(),
            tcp_resets: Family::default(),
            verdicts: Family::default(),
            incidents: Family::default(),
            events_lost: Family::default(),
            dropped: Family::default(),
            memcg_usage: Family::default(),
            memcg_limit: Family::default(),
            memcg_oom_events: Family::default(),
            limit_eta: Family::default(),
            limit_headroom: Family::default(),
            forecasts_set: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register("oom_kills", "Processes the kernel's OOM killer chose, by the victim's service", m.oom_kills.clone());
        registry.register(
            "fatal_signals",
            "Signals that end a process sent to one (SIGKILL, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGABRT), by receiver's service and sender kind",
            m.fatal_signals.clone(),
        );
        registry.register("exits_by_signal", "Processes that ended by a signal, by service and signal", m.exits_by_signal.clone());
        registry.register(
            "tcp_resets",
            "TCP resets sent or received, by the owning process's service, the kernel's reason and direction",
            m.tcp_resets.clone(),
        );
        registry.register("verdicts", "Verdicts: why something died or reset, by cause and service", m.verdicts.clone());
        registry.register("incidents", "Incident folders written, by service", m.incidents.clone());
        registry.register("events_lost", "Kernel records lost (ring buffer full), by probe", m.events_lost.clone());
        registry.register(
            "output_dropped",
            "Records an output dropped (OTLP queue full or collector down: the oldest go first)",
            m.dropped.clone(),
        );
        registry.register("memcg_usage_bytes", "Memory cgroup usage of a scoped service", m.memcg_usage.clone());
        registry.register("memcg_limit_bytes", "Memory cgroup limit of a scoped service (absent when unlimited)", m.memcg_limit.clone());
        registry.register(
            "memcg_oom_kills",
            "The memory cgroup's own count of OOM kills (memory.events oom_kill, v1 oom_control), of a scoped service",
            m.memcg_oom_events.clone(),
        );
        registry.register(
            "memory_limit_eta_seconds",
            "While a memory limit of a scoped service is projected to be reached within --warn-before: the seconds left at the present growth, by limit (memory_cgroup, host, gpu); absent otherwise",
            m.limit_eta.clone(),
        );
        registry.register(
            "memory_limit_headroom_bytes",
            "The headroom of a limit while it is forecast to be reached (see memory_limit_eta_seconds)",
            m.limit_headroom.clone(),
        );
        Metrics { registry, ..m }
    }

    fn known(&self) -> MutexGuard<'_, HashMap<ServiceLabels, Series>> {
        lock(&self.services)
    }

    /// The labels of a service, or `other` once [`MAX_SERVICES`] have series; `note`
    /// records which series it gets (`unknown` and `other` are never dropped).
    fn service(&self, identity: Option<&Identity>, note: impl FnOnce(&mut Series)) -> ServiceLabels {
        let labels = ServiceLabels::of(identity);
        if identity.is_none() {
            return labels;
        }
        let mut known = self.known();
        if let Some(series) = known.get_mut(&labels) {
            series.touched = Instant::now();
            note(series);
            return labels;
        }
        if known.len() >= MAX_SERVICES {
            return ServiceLabels::other();
        }
        let mut series = Series::new();
        note(&mut series);
        known.insert(labels.clone(), series);
        labels
    }

    pub fn oom_kill(&self, victim: Option<&Identity>) {
        self.oom_kills.get_or_create(&self.service(victim, |s| s.oom_kills = true)).inc();
    }

    pub fn fatal_signal(&self, receiver: Option<&Identity>, signal: &str, sender_kind: &str) {
        let service = self.service(receiver, |s| {
            s.signals.insert((signal.into(), sender_kind.into()));
        });
        let l = SignalLabels { service, signal: signal.into(), sender_kind: sender_kind.into() };
        self.fatal_signals.get_or_create(&l).inc();
    }

    pub fn exit_by_signal(&self, of: Option<&Identity>, signal: &str) {
        let service = self.service(of, |s| {
            s.exits.insert(signal.into());
        });
        self.exits_by_signal.get_or_create(&ExitLabels { service, signal: signal.into() }).inc();
    }

    pub fn tcp_reset(&self, owner: Option<&Identity>, reason: &str, direction: &str) {
        self.tcp_resets_by(owner, reason, direction, 1);
    }

    pub fn tcp_resets_by(&self, owner: Option<&Identity>, reason: &str, direction: &str, n: u64) {
        let service = self.service(owner, |s| {
            s.resets.insert((reason.into(), direction.into()));
        });
        let l = ResetLabels { service, reason: reason.into(), direction: direction.into() };
        self.tcp_resets.get_or_create(&l).inc_by(n);
    }

    pub fn verdict(&self, about: Option<&Identity>, cause: &str) {
        let service = self.service(about, |s| {
            s.causes.insert(cause.into());
        });
        self.verdicts.get_or_create(&CauseLabels { service, cause: cause.into() }).inc();
    }

    pub fn incident(&self, about: Option<&Identity>) {
        self.incidents.get_or_create(&self.service(about, |s| s.incidents = true)).inc();
    }

    /// A `forecast`: the gauges of its limit, until [`Metrics::expire_forecasts`] finds
    /// none newer.
    pub fn forecast(&self, of: Option<&Identity>, limit: &str, seconds_to_limit: f64, headroom_bytes: u64) {
        let service = self.service(of, |s| {
            s.limits.insert(limit.into());
        });
        let l = LimitLabels { service, limit: limit.into() };
        self.limit_eta.get_or_create(&l).set(seconds_to_limit);
        self.limit_headroom.get_or_create(&l).set(clamp(headroom_bytes));
        lock(&self.forecasts_set).insert(l, Instant::now());
    }

    /// Drops the forecast gauges not set for `older_than`: the limit is out of danger
    /// (forecasts repeat every second while it is in).
    pub fn expire_forecasts(&self, older_than: Duration) {
        let now = Instant::now();
        lock(&self.forecasts_set).retain(|l, at| {
            let keep = now.duration_since(*at) < older_than;
            if !keep {
                self.limit_eta.remove(l);
                self.limit_headroom.remove(l);
            }
            keep
        });
    }

    pub fn lost(&self, probe: &str, count: u64) {
        self.events_lost.get_or_create(&ProbeLabels { probe: probe.into() }).inc_by(count);
    }

    pub fn set_dropped(&self, output: &str, dropped: u64) {
        let c = self.dropped.get_or_create(&OutputLabels { output: output.into() });
        let now = c.get();
        if dropped > now {
            c.inc_by(dropped - now);
        }
    }

    pub fn memcg(&self, of: Option<&Identity>, usage: u64, limit: Option<u64>, oom_kills: Option<u64>) {
        let l = self.service(of, |s| s.memcg = true);
        self.memcg_usage.get_or_create(&l).set(clamp(usage));
        match limit {
            Some(limit) => {
                self.memcg_limit.get_or_create(&l).set(clamp(limit));
            }
            None => {
                self.memcg_limit.remove(&l);
            }
        }
        if let Some(n) = oom_kills {
            self.memcg_oom_events.get_or_create(&l).set(clamp(n));
        }
    }

    /// A service's cgroup went away: its gauges go with it (its counters stay).
    pub fn forget_memcg(&self, of: Option<&Identity>) {
        self.forget_memcg_labels(&ServiceLabels::of(of));
    }

    fn forget_memcg_labels(&self, l: &ServiceLabels) {
        self.memcg_usage.remove(l);
        self.memcg_limit.remove(l);
        self.memcg_oom_events.remove(l);
    }

    /// Drops every series of the services untouched for `idle` whose cgroup is `gone`
    /// (a deleted pod's series would otherwise stay for the agent's life, and take a slot
    /// of [`MAX_SERVICES`]). Their counters end: Prometheus marks such series stale.
    /// Returns how many services went.
    pub fn expire(&self, idle: Duration, gone: impl Fn(&ServiceLabels) -> bool) -> usize {
        let mut known = self.known();
        let now = Instant::now();
        let old: Vec<ServiceLabels> =
            known.iter().filter(|(l, s)| now.duration_since(s.touched) >= idle && gone(l)).map(|(l, _)| l.clone()).collect();
        for l in &old {
            let Some(s) = known.remove(l) else { continue };
            if s.oom_kills {
                self.oom_kills.remove(l);
            }
            if s.incidents {
                self.incidents.remove(l);
            }
            if s.memcg {
                self.forget_memcg_labels(l);
            }
            for (signal, sender_kind) in s.signals {
                self.fatal_signals.remove(&SignalLabels { service: l.clone(), signal, sender_kind });
            }
            for signal in s.exits {
                self.exits_by_signal.remove(&ExitLabels { service: l.clone(), signal });
            }
            for (reason, direction) in s.resets {
                self.tcp_resets.remove(&ResetLabels { service: l.clone(), reason, direction });
            }
            for cause in s.causes {
                self.verdicts.remove(&CauseLabels { service: l.clone(), cause });
            }
            for limit in s.limits {
                let l = LimitLabels { service: l.clone(), limit };
                self.limit_eta.remove(&l);
                self.limit_headroom.remove(&l);
                lock(&self.forecasts_set).remove(&l);
            }
        }
        old.len()
    }

    /// Services with series of their own now.
    pub fn services(&self) -> usize {
        self.known().len()
    }

    /// The exposition, as /metrics serves it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A poisoned lock still holds good data here: counters and times.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `--metrics` as typed: a port alone binds loopback (the metrics name processes and
/// pods: they are not for the whole network unless the user says so).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().map_err(|e| {
        format!("--metrics {s:?} is not a port or an address ({e}): give e.g. 9464, 127.0.0.1:9464, or 0.0.0.0:9464 for every interface")
    })
}

/// Binds now (so that a port in use is an error at start, not a log line later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot serve metrics on {addr}: {e} (another exporter on the port? give another with --metrics)")
    })
}

/// Connections served at once: a scraper needs one; more are refused (closed) so that a
/// listener open to the network cannot be made to hold file descriptors without bound.
const MAX_CONNECTIONS: usize = 32;
/// A connection that has not sent its request headers in this long is closed.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves GET /metrics (anything else: 404) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, service::service_fn, Response, StatusCode};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                            .body(Full::new(Bytes::from(metrics.render())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"tracer watch serves /metrics\n")))
                    };
                    response
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = http.serve_connection(io, service).await {
                tracing::debug!("metrics: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::identity;

    #[test]
    fn counters_carry_the_service_labels_and_no_pid() {
        let m = Metrics::new();
        let id = identity::parse("/kubepods/burstable/pod8b5e9d0e-1c4a-4b8e-9d7e-0a1b2c3d4e5f/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        m.oom_kill(Some(&id));
        m.oom_kill(Some(&id));
        m.fatal_signal(None, "SIGKILL", "kernel");
        m.tcp_reset(Some(&id), "NOT_SPECIFIED", "sent");
        m.verdict(Some(&id), "oom_killed");
        let text = m.render();
        let oom = text.lines().find(|l| l.starts_with("tracer_oom_kills_total{")).expect("oom series");
        assert!(oom.contains("pod_uid=\"8b5e9d0e-1c4a-4b8e-9d7e-0a1b2c3d4e5f\""), "{oom}");
        assert!(oom.ends_with(" 2"), "{oom}");
        assert!(text.contains("tracer_fatal_signals_total{service=\"unknown\""), "{text}");
        assert!(text.contains("sender_kind=\"kernel\""), "{text}");
        assert!(text.contains("tracer_verdicts_total{") && text.contains("cause=\"oom_killed\""), "{text}");
        assert!(!text.contains("pid=\""), "a pid label would grow without bound: {text}");
    }

    #[test]
    fn services_past_the_bound_share_one_series() {
        let m = Metrics::new();
        for i in 0..MAX_SERVICES + 5 {
            let id = identity::parse(&format!("/system.slice/svc-{i}.service"));
            m.oom_kill(Some(&id));
        }
        let text = m.render();
        let series = text.lines().filter(|l| l.starts_with("tracer_oom_kills_total{")).count();
        assert_eq!(series, MAX_SERVICES + 1, "one series per service up to the bound, then `other`");
        let other = text.lines().find(|l| l.starts_with("tracer_oom_kills_total{service=\"other\"")).expect("other");
        assert!(other.ends_with(" 5"), "{other}");
    }

    #[test]
    fn a_gone_service_loses_every_series_and_its_slot() {
        let m = Metrics::new();
        let gone = identity::parse("/tracer-gone");
        let live = identity::parse("/tracer-live");
        m.oom_kill(Some(&gone));
        m.fatal_signal(Some(&gone), "SIGKILL", "kernel");
        m.fatal_signal(Some(&gone), "SIGTERM", "process");
        m.exit_by_signal(Some(&gone), "SIGKILL");
        m.tcp_reset(Some(&gone), "NOT_SPECIFIED", "sent");
        m.verdict(Some(&gone), "oom_killed");
        m.incident(Some(&gone));
        m.memcg(Some(&gone), 1 << 20, Some(64 << 20), Some(1));
        m.oom_kill(Some(&live));
        m.oom_kill(None);
        assert_eq!(m.services(), 2, "unknown takes no slot");
        let is_gone = |l: &ServiceLabels| l.cgroup == "/tracer-gone";
        assert_eq!(m.expire(Duration::from_secs(3600), is_gone), 0, "touched just now");
        assert_eq!(m.expire(Duration::ZERO, is_gone), 1);
        let text = m.render();
        assert!(!text.contains("tracer-gone"), "{text}");
        assert!(text.contains("tracer_oom_kills_total{service=\"/tracer-live\""), "{text}");
        assert!(text.contains("tracer_oom_kills_total{service=\"unknown\""), "{text}");
        assert_eq!(m.services(), 1);
        // Its slot is free again: a service past the bound gets its own series.
        // 1 (live) + 998 + the gone one again = the bound.
        for i in 0..MAX_SERVICES - 2 {
            m.oom_kill(Some(&identity::parse(&format!("/svc-{i}"))));
        }
        m.oom_kill(Some(&gone));
        assert!(m.render().contains("tracer_oom_kills_total{service=\"/tracer-gone\""));
        m.oom_kill(Some(&identity::parse("/one-too-many")));
        assert!(m.render().contains("service=\"other\""));
    }

    #[test]
    fn a_forecast_is_a_gauge_while_the_danger_lasts() {
        let m = Metrics::new();
        let id = identity::parse("/tracer-model");
        m.forecast(Some(&id), "memory_cgroup", 2.5, 48 << 20);
        let text = m.render();
        let eta = text.lines().find(|l| l.starts_with("tracer_memory_limit_eta_seconds{")).unwrap_or_else(|| panic!("{text}"));
        assert!(eta.contains("cgroup=\"/tracer-model\"") && eta.contains("limit=\"memory_cgroup\"") && eta.ends_with(" 2.5"), "{eta}");
        assert!(text.contains(&format!("tracer_memory_limit_headroom_bytes{{service=\"/tracer-model\",cgroup=\"/tracer-model\",runtime=\"plain\",pod_uid=\"\",container_id=\"\",limit=\"memory_cgroup\"}} {}", 48u64 << 20)), "{text}");
        m.expire_forecasts(Duration::from_secs(60));
        assert!(m.render().contains("tracer_memory_limit_eta_seconds{"), "set just now: kept");
        m.expire_forecasts(Duration::ZERO);
        let text = m.render();
        assert!(!text.contains("tracer_memory_limit_eta_seconds{") && !text.contains("tracer_memory_limit_headroom_bytes{"), "{text}");
        // A gone service's forecast gauges go with its other series.
        m.forecast(Some(&id), "host", 9.0, 1);
        assert_eq!(m.expire(Duration::ZERO, |_| true), 1);
        assert!(!m.render().contains("tracer_memory_limit_eta_seconds{"));
    }

    #[test]
    fn totals_set_from_cumulative_counts_never_go_back() {
        let m = Metrics::new();
        m.lost("rss_stat", 10);
        m.lost("rss_stat", 2);
        m.set_dropped("otlp", 10);
        m.set_dropped("otlp", 4);
        let text = m.render();
        assert!(text.contains("tracer_events_lost_total{probe=\"rss_stat\"} 12"), "{text}");
        assert!(text.contains("tracer_output_dropped_total{output=\"otlp\"} 10"), "{text}");
    }

    #[test]
    fn gauges_follow_the_cgroup_and_go_with_it() {
        let m = Metrics::new();
        let id = identity::parse("/tracer-test-1");
        m.memcg(Some(&id), 100 << 20, Some(256 << 20), Some(1));
        let text = m.render();
        assert!(text.contains(&format!("tracer_memcg_limit_bytes{{service=\"/tracer-test-1\",cgroup=\"/tracer-test-1\",runtime=\"plain\",pod_uid=\"\",container_id=\"\"}} {}", 256u64 << 20)), "{text}");
        m.memcg(Some(&id), 100 << 20, None, None);
        assert!(!m.render().contains("tracer_memcg_limit_bytes{"), "an unlimited cgroup has no limit series");
        m.forget_memcg(Some(&id));
        assert!(!m.render().contains("tracer_memcg_usage_bytes{"));
    }

    #[test]
    fn a_port_alone_binds_loopback() {
        assert_eq!(parse_listen("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_listen("0.0.0.0:9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert!(parse_listen("everywhere").unwrap_err().contains("0.0.0.0:9464"));
    }
}

//! `tracer watch`: the always-on host agent. Every process on the host is watched for the
//! rare events (OOM kills, fatal signals with their sender, ends by a signal, TCP resets
//! with reasons); the services in scope (`--cgroup`, `--unit`, `--match`) also for their
//! memory. Verdicts are made as things happen, with the rules of `tracer report`, and go
//! to Prometheus (`--metrics`), OpenTelemetry (`--otlp`), JSON lines (`--jsonl`) and
//! incident folders (`--incident-dir`).
mod detector;
mod incidents;
pub mod metrics;
mod records;
mod services;

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use tokio::io::unix::AsyncFd;

use self::{
    detector::Detector,
    incidents::{IncidentOptions, Incidents},
    metrics::Metrics,
    services::{Selector, Service},
};
use crate::{
    capture::{Capture, CaptureError, CaptureOptions, ProbeGroup},
    clock::wall_now_ns,
    diagnose,
    event::Event,
    export::otlp::{AttrValue, OtlpExporter, OtlpOptions},
    process::{self, identity::{Identity, IdentityCache}},
    units::parse_bytes,
};

#[derive(Debug, Args, Clone)]
#[command(long_about = "Watch the whole host, always on, and explain every death and reset as it happens.\n\n\
    Every process is watched for the rare events: OOM kills, fatal signals (with who sent them), \
    ends by a signal, TCP resets (with the kernel's reason). The services named with --cgroup, \
    --unit or --match also get full memory detail: memory calls, RSS, their memory cgroup's usage, \
    limit and OOM kills. A verdict is made a few seconds after a rare event, with the rules of \
    `tracer report`, and goes to every output: a line on standard error, an incident folder, \
    /metrics, OTLP and JSON lines. Each event and verdict names its service: the container \
    (Docker, containerd/Kubernetes, CRI-O, Podman) or systemd unit read from the process's cgroup.\n\n\
    Examples:\n  sudo tracer watch --metrics 9464\n  \
    sudo tracer watch --unit model-server --otlp http://127.0.0.1:4318 --jsonl /var/log/tracer\n  \
    sudo tracer watch --match 'python*' --incident-dir /tmp/incidents --duration 10m\n\n\
    Runs until Ctrl-C or SIGTERM (or --duration); SIGHUP reopens the --jsonl file (for logrotate). \
    Needs root, or CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (and \
    CAP_SYS_RESOURCE or a raised RLIMIT_MEMLOCK on kernels before 5.11); deploy/ has a systemd \
    unit and a Kubernetes DaemonSet that run it so.")]
pub struct WatchArgs {
    /// A service to watch in detail: every process in this cgroup and below (v1 or v2);
    /// a folder under /sys/fs/cgroup or a path as /proc/PID/cgroup shows it. Repeatable
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,

    /// A systemd unit to watch in detail (its cgroup, as --cgroup). Repeatable
    #[arg(long, value_name = "NAME")]
    pub unit: Vec<String>,

    /// Processes to watch in detail by name (the kernel's comm, 15 characters at most; a
    /// trailing * matches the start, e.g. 'python*'). Repeatable
    #[arg(long = "match", value_name = "COMM")]
    pub matches: Vec<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics: a port alone (9464) listens on
    /// 127.0.0.1 only; give 0.0.0.0:9464 for every interface. Default: off
    #[arg(long, value_parser = metrics::parse_listen, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Send each verdict and each fatal event as an OpenTelemetry log record (OTLP over
    /// HTTP, protobuf) to this collector, e.g. http://127.0.0.1:4318 (/v1/logs is added
    /// when no path is given). A collector that is down costs nothing: records wait in a
    /// bounded queue, the oldest dropped first and counted
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,

    /// Write every event and verdict, with its service, as JSON lines to
    /// DIR/tracer-watch.jsonl (reopened on SIGHUP). Default: off
    #[arg(long, value_name = "DIR")]
    pub jsonl: Option<PathBuf>,

    /// Write a folder per verdict here: the events around it (events.jsonl, which
    /// `tracer report` reads), report.md, trace.perfetto.json and verdict.json
    #[arg(long, value_name = "DIR", default_value = "/var/lib/tracer/incidents")]
    pub incident_dir: PathBuf,

    /// Write no incident folders
    #[arg(long, conflicts_with = "incident_dir")]
    pub no_incidents: bool,

    /// Keep at most this many incident folders (the oldest are removed first)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_incidents: usize,

    /// Keep the incident folders under this size in all (e.g. 1GiB)
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_incident_bytes: u64,

    /// How much of the past the agent keeps in memory, and an incident folder holds
    /// before its verdict's first event
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,

    /// How long after a rare event the verdict is made (the resets that follow a death
    /// come in meanwhile)
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub settle: Duration,

    /// Sample the services in scope (processes, memory cgroup) this often; 0: never
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sample_interval: Duration,

    /// Stop after this long (e.g. 10m); default: until Ctrl-C or SIGTERM
    #[arg(short, long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Size of the kernel ring buffer (a power of two)
    #[arg(long, default_value = "4MiB", value_parser = super::trace::parse_ring_size, value_name = "BYTES")]
    pub ring_buffer: u64,

    /// A service whose cgroup is gone (a deleted pod, a stopped unit) loses its /metrics
    /// series this long after its last event, so that months of pods coming and going
    /// keep the series (and the agent's memory) bounded
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub service_ttl: Duration,

    /// For the services in scope: a `forecast` (a JSON line, the gauge
    /// tracer_memory_limit_eta_seconds, an OTLP record, and the OOM verdict's "warned …
    /// before") when a memory limit will be reached within this time at the present
    /// growth, as `tracer --warn-before`; 0 disables
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub warn_before: Duration,

    /// For the services in scope: an rss event when a memory counter moved by this much
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub rss_threshold: u64,
}

/// Events the agent keeps in memory at most, whatever --window says: a storm of memory
/// calls in a scoped service must not grow it without bound (about 300 bytes each).
const MAX_WINDOW_EVENTS: usize = 100_000;
/// How often the services are listed and the pid → service cache is brought up to date.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long a process that ended keeps its service in the cache: for the events that
/// follow an end (resets, the OOM killer's marks), which come within seconds; the
/// window's events keep their own.
const KEEP_GONE: Duration = Duration::from_secs(120);
/// A forecast's gauges stay this long (or two sample intervals) after the last forecast
/// of their limit: while it is in danger one comes at every sample and rss event, at
/// most one a second.
const FORECAST_GAUGE_KEEP: Duration = Duration::from_secs(5);
/// How often the series of gone services are looked for (at most; a shorter
/// --service-ttl looks as often as it says, down to a second).
const EXPIRE_EVERY: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(50);

pub fn run(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    process::target::require_host_pids()?;
    let mut selectors: Vec<Selector> = Vec::new();
    for c in &args.cgroup {
        selectors.push(Selector::Cgroup(process::scope::resolve_cgroup(c)?));
    }
    for u in &args.unit {
        selectors.push(Selector::Cgroup(process::scope::resolve_unit(u)?));
    }
    for m in &args.matches {
        if m.trim_end_matches('*').is_empty() || m.len() > 16 {
            anyhow::bail!("--match {m:?}: give a process name as `ps -o comm` shows it (15 characters at most), or its start with a trailing *");
        }
        selectors.push(Selector::Comm(m.clone()));
    }
    let incidents = if args.no_incidents {
        None
    } else {
        Some(Incidents::open(IncidentOptions {
            dir: args.incident_dir.clone(),
            max_count: args.max_incidents.max(1),
            max_bytes: args.max_incident_bytes,
            before_ns: args.window.as_nanos() as u64,
            // Set to the probes' attach time once they are attached.
            since_ns: 0,
        })?)
    };
    let jsonl = match &args.jsonl {
        Some(dir) => Some(JsonlOut::open(dir)?),
        None => None,
    };
    // Memory probes cost every process a map lookup per memory call: only with a scope.
    let mut probes = vec![ProbeGroup::Process, ProbeGroup::Signal, ProbeGroup::Oom, ProbeGroup::Tcp];
    if !selectors.is_empty() {
        probes.extend([ProbeGroup::Mmap, ProbeGroup::Rss]);
    }
    let scope = selectors.iter().find_map(|s| match s {
        Selector::Cgroup(dir) => process::scope::hierarchy_of(dir),
        Selector::Comm(_) => None,
    });
    let capture = Capture::load(&CaptureOptions {
        follow_children: true,
        rss_threshold_bytes: args.rss_threshold,
        probes: probes.into_iter().collect(),
        ring_buffer_bytes: args.ring_buffer as u32,
        follow_restarts: false,
        scope,
        host_wide: true,
        // Deliveries matter for traced processes only (an end's cause comes from its exit
        // code): without a scope, none is traced, and a signal storm anywhere would pay.
        without: if selectors.is_empty() { vec!["signal_deliver"] } else { Vec::new() },
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(agent(capture, args, selectors, incidents, jsonl))
}

/// `--jsonl DIR`: one file, appended to, reopened on SIGHUP (logrotate moves it away).
struct JsonlOut {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    failed: bool,
}

impl JsonlOut {
    fn open(dir: &std::path::Path) -> anyhow::Result<JsonlOut> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for --jsonl: give a writable folder", dir.display()))?;
        let path = dir.join("tracer-watch.jsonl");
        let file = Self::append(&path).with_context(|| format!("cannot write {}: give a writable folder to --jsonl", path.display()))?;
        Ok(JsonlOut { path, file, failed: false })
    }

    fn append(path: &std::path::Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        Ok(std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
    }

    fn reopen(&mut self) {
        let _ = self.file.flush();
        match Self::append(&self.path) {
            Ok(f) => {
                self.file = f;
                self.failed = false;
                eprintln!("tracer watch: reopened {}", self.path.display());
            }
            Err(e) => tracing::warn!("cannot reopen {}: {e}", self.path.display()),
        }
    }

    fn line(&mut self, value: &impl serde::Serialize) {
        let r = serde_json::to_writer(&mut self.file, value).map_err(std::io::Error::from).and_then(|()| self.file.write_all(b"\n"));
        if let Err(e) = r {
            // The agent goes on: its other outputs still work, and a full disk may clear.
            if !self.failed {
                tracing::warn!("cannot write {}: {e} (events are not written there until it works again)", self.path.display());
            }
            self.failed = true;
        } else if self.failed {
            self.failed = false;
            tracing::info!("writing {} again", self.path.display());
        }
    }

    fn flush(&mut self) {
        let _ = self.file.flush();
    }
}

/// The agent's state between ticks.
struct Agent {
    metrics: Arc<Metrics>,
    otlp: Option<OtlpExporter>,
    jsonl: Option<JsonlOut>,
    incidents: Option<Incidents>,
    identities: IdentityCache,
    services: Vec<Service>,
    /// Processes of the services, by pid: index into `services`, and since when the
    /// process is gone (kept [`KEEP_GONE`] for the events that follow its end).
    members: HashMap<u32, (usize, Option<Instant>)>,
    /// The recent events in time order, and next to each the service it is about.
    window: VecDeque<Event>,
    window_services: VecDeque<Option<Arc<Identity>>>,
    window_ns: u64,
    /// Samples wait here until capture has released every kernel event before them, so
    /// that the outputs are in time order; with the index of their service.
    samples: VecDeque<(Event, Option<Arc<Identity>>, usize)>,
    detector: Detector,
    events: u64,
    verdicts: u64,
    /// The kernel's counts of resets no traced process owns, as last added to the metrics.
    other_resets: std::collections::BTreeMap<String, u64>,
    /// OOM victims seen lately, with when: the kernel marks a victim again each time the
    /// OOM killer runs while it is still exiting, and that is one kill, not several.
    victims: HashMap<u32, u64>,
}

/// How long a victim marked again counts as the same kill.
const SAME_KILL_NS: u64 = 30_000_000_000;

impl Agent {
    fn identity(&mut self, pid: Option<u32>) -> Option<Arc<Identity>> {
        let pid = pid?;
        // Its own cgroup first (a pod below a scoped slice is that pod); a service's
        // process that died before any listing saw it (the kernel took it in as it moved
        // into the cgroup) has the service's.
        self.identities
            .get(pid)
            .or_else(|| self.members.get(&pid).and_then(|(k, gone)| gone.is_none().then(|| self.services[*k].identity.clone()).flatten()))
    }

    /// One event through every output, into the window; `source` is the service that
    /// sampled it (else the one its process belongs to, for the forecast).
    fn handle(&mut self, ev: Event, service: Option<Arc<Identity>>, source: Option<usize>, now_ns: u64) {
        let who = match service {
            Some(s) => Some(s),
            None => self.identity(records::subject_pid(&ev)),
        };
        let forecast = self.forecast(&ev, source);
        let marked_again = match &ev.kind {
            crate::event::EventKind::OomKill { victim_pid: Some(v), .. } => {
                let again = self.victims.get(v).is_some_and(|&t| ev.ts_ns.saturating_sub(t) < SAME_KILL_NS);
                self.victims.insert(*v, ev.ts_ns);
                again
            }
            _ => false,
        };
        if !marked_again {
            records::count(&self.metrics, &ev, who.as_deref());
            if let Some(otlp) = &self.otlp {
                if let Some(rec) = records::event_record(&ev, who.as_deref()) {
                    otlp.send(rec);
                }
            }
        }
        if let Some(out) = self.jsonl.as_mut() {
            out.line(&records::Line { event: &ev, service: who.as_deref() });
        }
        self.detector.observe(&ev, now_ns);
        self.events += 1;
        self.window.push_back(ev);
        self.window_services.push_back(who.clone());
        if let Some(f) = forecast {
            self.handle(f, who, None, now_ns);
        }
    }

    /// The forecast a service's event leads to: its samples, and its processes' rss
    /// events, ends and OOM kills.
    fn forecast(&mut self, ev: &Event, source: Option<usize>) -> Option<Event> {
        use crate::event::EventKind as K;
        let k = match (&ev.kind, source) {
            (K::Sample { .. }, Some(k)) => k,
            (K::Rss { .. }, _) => self.members.get(&ev.pid).filter(|(_, gone)| gone.is_none()).map(|(k, _)| *k)?,
            // Its end often comes after a listing found it gone: still its service's.
            (K::Exit { .. }, _) => self.members.get(&ev.pid).map(|(k, _)| *k)?,
            (K::OomKill { victim_pid: Some(v), .. }, _) => self.members.get(v).map(|(k, _)| *k)?,
            _ => return None,
        };
        self.services.get_mut(k)?.forecast(ev)
    }

    /// Lists the services; traces and files their new processes; reads their cgroups.
    fn refresh_services(&mut self, capture: &mut Capture) {
        let mut new = Vec::new();
        for (k, s) in self.services.iter_mut().enumerate() {
            for pid in s.refresh(capture) {
                self.members.insert(pid, (k, None));
                new.push(pid);
            }
            match s.gauges() {
                Some(g) => self.metrics.memcg(s.identity.as_deref(), g.usage, g.limit, g.oom_kills),
                None if s.removed() => self.metrics.forget_memcg(s.identity.as_deref()),
                None => {}
            }
        }
        // Their own cgroups, read while they live (a short-lived one may die before its
        // first event is handled).
        for pid in new {
            self.identity(Some(pid));
        }
        let now = Instant::now();
        self.members.retain(|pid, (_, gone)| {
            if gone.is_none() && !process::process_exists(*pid) {
                *gone = Some(now);
            }
            gone.is_none_or(|t| now.duration_since(t) < KEEP_GONE)
        });
    }

    /// Tasks the kernel took in as they moved into the first cgroup given: filed under
    /// its service (their thread group, when they still live).
    fn adopt_joined(&mut self, capture: &mut Capture) {
        let Some(k) = self.services.iter().position(Service::is_cgroup) else { return };
        for task in capture.take_joined() {
            let pid = match capture.settle_joined(task) {
                Ok(Some(pid)) => pid,
                Ok(None) => task,
                Err(e) => {
                    tracing::debug!("task {task} joined: {e}");
                    task
                }
            };
            self.services[k].adopt(pid);
            self.members.insert(pid, (k, None));
            self.identity(Some(pid));
        }
    }

    /// Capture's released events merged with the samples taken before `until_ns`.
    fn merge(&mut self, released: Vec<Event>, until_ns: u64, now_ns: u64) {
        for ev in released {
            while self.samples.front().is_some_and(|(s, _, _)| s.ts_ns <= ev.ts_ns) {
                let (s, who, k) = self.samples.pop_front().expect("front checked");
                self.handle(s, who, Some(k), now_ns);
            }
            self.handle(ev, None, None, now_ns);
        }
        while self.samples.front().is_some_and(|(s, _, _)| s.ts_ns <= until_ns) {
            let (s, who, k) = self.samples.pop_front().expect("front checked");
            self.handle(s, who, Some(k), now_ns);
        }
    }

    fn trim(&mut self, now_ns: u64) {
        let from = now_ns.saturating_sub(self.window_ns);
        while self.window.front().is_some_and(|e| e.ts_ns < from) || self.window.len() > MAX_WINDOW_EVENTS {
            self.window.pop_front();
            self.window_services.pop_front();
        }
        self.detector.expire(from);
        self.victims.retain(|_, t| now_ns.saturating_sub(*t) < 2 * SAME_KILL_NS);
    }

    /// Diagnoses the window; reports the verdicts not reported before.
    fn diagnose(&mut self, now_ns: u64) {
        // One contiguous slice, no copy: diagnosis and incidents read it in place.
        self.window.make_contiguous();
        self.window_services.make_contiguous();
        let verdicts = self.detector.fresh(diagnose::diagnose(self.window.as_slices().0));
        for v in verdicts {
            self.verdicts += 1;
            let (events, services) = (self.window.as_slices().0, self.window_services.as_slices().0);
            let who = v
                .pid
                .and_then(|pid| {
                    let k = events.iter().rposition(|e| records::subject_pid(e) == Some(pid))?;
                    services.get(k).cloned().flatten()
                })
                .or_else(|| self.identity(v.pid));
            let (events, services) = (self.window.as_slices().0, self.window_services.as_slices().0);
            let folder = self.incidents.as_ref().and_then(|inc| match inc.write(&v, who.as_deref(), events, services, now_ns) {
                Ok(dir) => {
                    self.metrics.incident(who.as_deref());
                    Some(dir)
                }
                Err(e) => {
                    tracing::warn!("cannot write the incident of {} in {}: {e}", v.cause.as_str(), inc.dir().display());
                    None
                }
            });
            self.metrics.verdict(who.as_deref(), v.cause.as_str());
            if let Some(otlp) = &self.otlp {
                otlp.send(records::verdict_record(&v, who.as_deref(), folder.as_deref()));
            }
            if let Some(out) = self.jsonl.as_mut() {
                out.line(&records::VerdictLine {
                    ts_ns: now_ns,
                    kind: "verdict",
                    verdict: &v,
                    service: who.as_deref(),
                    incident: folder.as_ref().map(|d| d.display().to_string()),
                });
                out.flush();
            }
            let service = who.as_deref().map(|i| format!(" [{}]", i.service())).unwrap_or_default();
            let at = folder.map(|d| format!(" (incident: {})", d.display())).unwrap_or_default();
            eprintln!("tracer watch: {}{service}: {}{at}", v.cause.as_str(), v.summary);
            if let Some(a) = &v.action {
                eprintln!("tracer watch:   what to do: {a}");
            }
        }
    }
}

async fn agent(
    mut capture: Capture,
    args: &WatchArgs,
    selectors: Vec<Selector>,
    mut incidents: Option<Incidents>,
    jsonl: Option<JsonlOut>,
) -> anyhow::Result<ExitCode> {
    if let Some(i) = incidents.as_mut() {
        i.watching_since(capture.attached_at_ns);
    }
    let metrics = Arc::new(Metrics::new());
    let server = match args.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            let local = listener.local_addr().unwrap_or(addr);
            eprintln!("tracer watch: metrics at http://{local}/metrics");
            Some(tokio::spawn(metrics::serve(listener, metrics.clone())))
        }
        None => None,
    };
    let otlp = match &args.otlp {
        Some(url) => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
            let resource = vec![
                ("service.name".to_string(), AttrValue::Str("tracer".into())),
                ("service.version".to_string(), AttrValue::Str(env!("CARGO_PKG_VERSION").into())),
                ("host.name".to_string(), AttrValue::Str(host)),
            ];
            Some(OtlpExporter::start(url, resource, OtlpOptions::default()).map_err(|e| anyhow::anyhow!("--otlp {url:?}: {e}"))?)
        }
        None => None,
    };
    let sample_every = Some(args.sample_interval).filter(|d| !d.is_zero());
    let warn_before = Some(args.warn_before).filter(|d| !d.is_zero());
    let services: Vec<Service> = selectors.into_iter().map(|s| Service::new(s, sample_every, warn_before)).collect();
    let mut identities = IdentityCache::new();
    identities.refresh();
    let mut agent = Agent {
        metrics,
        otlp,
        jsonl,
        incidents,
        identities,
        services,
        members: HashMap::new(),
        window: VecDeque::new(),
        window_services: VecDeque::new(),
        samples: VecDeque::new(),
        window_ns: args.window.as_nanos() as u64,
        detector: Detector::new(args.settle),
        events: 0,
        verdicts: 0,
        other_resets: std::collections::BTreeMap::new(),
        victims: HashMap::new(),
    };
    agent.refresh_services(&mut capture);
    let scope = if agent.services.is_empty() {
        "no service in detail (--cgroup, --unit, --match)".to_string()
    } else {
        agent.services.iter().map(|s| format!("{} ({} processes)", s.selector.describe(), s.processes())).collect::<Vec<_>>().join(", ")
    };
    eprintln!(
        "tracer watch: every process on the host with {} probes; in detail: {scope}; incidents: {}; Ctrl-C stops",
        capture.attached.len(),
        agent.incidents.as_ref().map(|i| i.dir().display().to_string()).unwrap_or_else(|| "off".into()),
    );
    for m in &capture.missing {
        eprintln!("tracer watch: not attached: {m}");
    }

    let ring_fd = capture.ring_fd().try_clone_to_owned().context("duplicating the ring buffer fd")?;
    // SAFETY: the fd is ours (a dup) and lives exactly as long as the AsyncFd.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the event loop: {e}"))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut refreshed = Instant::now();
    let mut expired = Instant::now();
    loop {
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard.map_err(CaptureError::Poll)?;
                if !capture.receive() {
                    guard.clear_ready();
                }
                if capture.backlog() >= 2 * crate::capture::READ_CHUNK {
                    release(&mut capture, &mut agent);
                }
            }
            _ = tick.tick() => {
                agent.adopt_joined(&mut capture);
                release(&mut capture, &mut agent);
                let now = Instant::now();
                let now_ns = wall_now_ns();
                let due: Vec<(Event, Option<Arc<Identity>>, usize)> = agent
                    .services
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(k, s)| s.poll(now).map(|(ev, who)| (ev, who, k)))
                    .collect();
                agent.samples.extend(due);
                if agent.detector.due(now_ns) {
                    agent.diagnose(now_ns);
                }
                agent.trim(now_ns);
                if refreshed.elapsed() >= REFRESH_EVERY {
                    refreshed = now;
                    agent.identities.refresh();
                    agent.identities.expire(KEEP_GONE);
                    agent.refresh_services(&mut capture);
                    agent.metrics.expire_forecasts(FORECAST_GAUGE_KEEP.max(2 * args.sample_interval));
                    records::count_other_resets(&agent.metrics, &capture.other_resets(), &mut agent.other_resets);
                    if let Some(otlp) = &agent.otlp {
                        agent.metrics.set_dropped("otlp", otlp.stats().dropped);
                    }
                    if let Some(out) = agent.jsonl.as_mut() {
                        out.flush();
                    }
                }
                if expired.elapsed() >= EXPIRE_EVERY.min(args.service_ttl.max(Duration::from_secs(1))) {
                    expired = now;
                    let lookup = process::identity::CgroupLookup::new();
                    let n = agent.metrics.expire(args.service_ttl, |l| lookup.gone(&l.cgroup));
                    if n > 0 {
                        tracing::debug!("{n} gone services' series dropped; {} services have series", agent.metrics.services());
                    }
                }
                if args.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
            _ = sighup.recv() => {
                if let Some(out) = agent.jsonl.as_mut() {
                    out.reopen();
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    // What was captured before the stop still counts, and a verdict still pending is made.
    while capture.receive() {
        release(&mut capture, &mut agent);
    }
    let now_ns = wall_now_ns();
    let rest = capture.finish(now_ns);
    agent.merge(rest, u64::MAX, now_ns);
    if agent.detector.due(u64::MAX) {
        agent.diagnose(now_ns);
    }
    if let Some(otlp) = &agent.otlp {
        otlp.flush(Duration::from_secs(3)).await;
        let stats = otlp.stats();
        if stats.dropped > 0 || stats.queued > 0 {
            eprintln!("tracer watch: OTLP: {} records sent, {} dropped, {} not sent", stats.sent, stats.dropped, stats.queued);
        }
    }
    if let Some(out) = agent.jsonl.as_mut() {
        out.flush();
    }
    if let Some(s) = server {
        s.abort();
    }
    eprintln!(
        "tracer watch: stopped after {}: {} events, {} verdicts, {} lost",
        crate::units::duration(started.elapsed().as_nanos() as u64),
        agent.events,
        agent.verdicts,
        capture.lost_total()
    );
    Ok(ExitCode::SUCCESS)
}

/// Hands what capture has finished to the agent.
fn release(capture: &mut Capture, agent: &mut Agent) {
    let released = capture.poll(wall_now_ns());
    // The agent samples services by their cgroup: a traced task's move needs no sample now.
    let _ = capture.take_moved();
    for e in &released.events {
        if matches!(e.kind, crate::event::EventKind::Exit { group_dead: true, .. }) {
            capture.forget_process(e.pid);
        }
    }
    for s in agent.services.iter_mut() {
        s.observe(&released.events);
    }
    agent.merge(released.events, released.until_ns, wall_now_ns());
}

//! `tracer watch` on the real kernel: a process OOM-killed in a real memory cgroup is
//! seen by the agent, its verdict lands in an incident folder, in a real Prometheus
//! server's query results (Debian's `prometheus`, scraping the agent) and as OTLP log
//! records a receiver decodes; a process outside every scope, killed by a signal, is
//! explained too, with its service; SIGHUP reopens the JSON lines. Root; one at a time.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use scenario::{otlp_receiver::OtlpReceiver, prometheus::PrometheusServer};
use tracer_tests::{require_root, stress, tracer_bin, ChildGuard, Memcg, TempDir};

/// A running `tracer watch`, stopped with SIGTERM on drop.
struct Agent {
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(tracer_bin())
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer watch");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let agent = Agent { child: ChildGuard(child), stderr };
        agent.wait_for("Ctrl-C stops", Duration::from_secs(30));
        agent
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            assert!(Instant::now() < deadline, "tracer watch did not say {text:?} in {timeout:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as systemd stops it; the exit status.
    fn stop(mut self) -> (Option<i32>, String) {
        self.child.signal(libc::SIGTERM);
        let status = self.child.wait_timeout(Duration::from_secs(20));
        (status.and_then(|s| s.code()), self.stderr())
    }
}

/// A cgroup below another, removed on drop (before its parent's guard removes the parent).
struct Child(PathBuf);

impl Child {
    fn new(dir: &Path) -> Child {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Child(dir.to_path_buf())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    scenario::http::free_port().expect("a free port")
}

/// JSON lines of a file (empty when it is not there yet).
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn incidents(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn an_oom_kill_in_a_watched_cgroup_reaches_the_incident_folder_prometheus_and_otlp() {
    require_root("tracer watch loads eBPF programs and the test makes a memory cgroup");
    let prometheus_missing = !Path::new("/usr/bin/prometheus").exists();
    if prometheus_missing {
        eprintln!("SKIPPING the Prometheus part LOUDLY: /usr/bin/prometheus is missing (`cargo xtask setup` installs Debian's prometheus)");
    }
    let cg = Memcg::new("watch-oom", 64 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    // The victim runs in a cgroup below the scope, as a pod below `kubepods.slice`: its
    // events and verdict name its own cgroup; the scope's gauges name the scope.
    let pod = Child::new(&cg.path.join("pod-a"));
    let tmp = TempDir::new("watch");
    let incident_dir = tmp.0.join("incidents");
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&[
        "--cgroup",
        &cgroup,
        "--metrics",
        &metrics_addr,
        "--otlp",
        &receiver.url(),
        "--jsonl",
        &tmp.0.display().to_string(),
        "--incident-dir",
        &incident_dir.display().to_string(),
        "--settle",
        "1s",
    ]);
    let prometheus = if prometheus_missing {
        None
    } else {
        PrometheusServer::start(&metrics_addr, Duration::from_secs(1)).expect("start prometheus")
    };

    // The victim joins the cgroup itself: the agent has never listed it.
    let pod_dir = pod.0.display().to_string();
    let mut victim = ChildGuard(Command::new(stress()).args(["alloc", "--cgroup", &pod_dir]).stdout(Stdio::null()).spawn().expect("stress"));
    let status = victim.wait_timeout(Duration::from_secs(30)).expect("the allocator was not OOM-killed");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status:?}");
    let victim_pid = victim.pid();

    // The incident folder.
    // Other verdicts may come from anywhere on the host (the agent watches every process):
    // this one is the folder of the victim's OOM kill.
    let folder = wait_until(Duration::from_secs(20), "the OOM kill's incident folder", || {
        incidents(&incident_dir).into_iter().find(|d| {
            d.join("report.md").is_file()
                && std::fs::read(d.join("verdict.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["cause"] == "oom_killed" && v["pid"] == victim_pid)
        })
    });
    let verdict: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(verdict["cause"], "oom_killed", "{verdict:#}");
    assert_eq!(verdict["pid"], victim_pid, "{verdict:#}");
    let scope_in_hierarchy = format!("/{}", cg.path.file_name().unwrap().to_str().unwrap());
    let cgroup_in_hierarchy = format!("{scope_in_hierarchy}/pod-a");
    assert_eq!(verdict["service"]["cgroup"], cgroup_in_hierarchy.as_str(), "{verdict:#}");
    // The cgroup id is the folder's inode.
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&pod.0).unwrap());
    assert_eq!(verdict["service"]["cgroup_id"], ino, "{verdict:#}");
    let report = std::fs::read_to_string(folder.join("report.md")).unwrap();
    assert!(report.contains("OOM") && report.contains(&victim_pid.to_string()), "{report}");
    let events = lines(&folder.join("events.jsonl"));
    assert_eq!(events.first().map(|e| e["kind"].clone()), Some("trace_start".into()));
    assert!(events.iter().any(|e| e["kind"] == "oom_kill" && e["victim_pid"] == victim_pid), "no oom_kill in the incident's events");
    // `tracer report` reads the incident's events as a trace and comes to the same cause.
    let out = Command::new(tracer_bin()).args(["report", "--format", "json"]).arg(folder.join("events.jsonl")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["verdicts"].as_array().unwrap().iter().any(|v| v["cause"] == "oom_killed" && v["pid"] == victim_pid), "{report:#}");

    // The OTLP records: the OOM kill as it happened, then the verdict.
    let records = receiver.wait_for(Duration::from_secs(15), |r| r.iter().any(|x| x.attributes.get("tracer.cause").is_some_and(|c| c == "oom_killed")));
    let kill = records.iter().find(|r| r.body.starts_with("OOM killer chose")).unwrap_or_else(|| panic!("no OOM record in {records:#?}"));
    assert_eq!(kill.attributes.get("process.pid"), Some(&victim_pid.to_string()), "{kill:#?}");
    assert_eq!(kill.attributes.get("tracer.cgroup"), Some(&cgroup_in_hierarchy), "{kill:#?}");
    let v = records.iter().find(|r| r.attributes.get("tracer.cause").is_some_and(|c| c == "oom_killed")).unwrap();
    assert_eq!(v.body, verdict["summary"].as_str().unwrap());
    assert_eq!(v.severity_text, "FATAL");
    assert_eq!(v.attributes.get("tracer.incident"), Some(&folder.display().to_string()));
    assert_eq!(v.resource.get("service.name").map(String::as_str), Some("tracer"));

    // Prometheus, scraping the agent, answers the OOM counter with the cgroup's labels.
    if let Some(prom) = &prometheus {
        let query = format!("tracer_oom_kills_total{{cgroup=\"{cgroup_in_hierarchy}\"}}");
        let result = prom.wait_for(&query, Duration::from_secs(30), |r| !r.is_empty()).expect("query prometheus");
        assert_eq!(result.len(), 1, "{result:?}");
        assert_eq!(result[0]["metric"]["runtime"], "plain", "{result:?}");
        assert_eq!(result[0]["value"][1], "1", "{result:?}");
        let verdicts = prom.query(&format!("tracer_verdicts_total{{cause=\"oom_killed\",cgroup=\"{cgroup_in_hierarchy}\"}}")).unwrap();
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        // The scope's own memory cgroup, read directly, whether or not the victim lived
        // long enough to be sampled.
        let usage = prom.query(&format!("tracer_memcg_limit_bytes{{cgroup=\"{scope_in_hierarchy}\"}}")).unwrap();
        assert_eq!(usage.first().map(|u| u["value"][1].clone()), Some(serde_json::Value::from((64u64 << 20).to_string())), "{usage:?}");
    }

    // The JSON lines carry the service with every event about the victim.
    let all = lines(&tmp.0.join("tracer-watch.jsonl"));
    let oom = all.iter().find(|e| e["kind"] == "oom_kill").expect("oom_kill line");
    assert_eq!(oom["service"]["cgroup"], cgroup_in_hierarchy.as_str());
    assert!(all.iter().any(|e| e["kind"] == "verdict" && e["cause"] == "oom_killed"));

    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("oom_killed"), "{stderr}");
}

#[test]
fn a_process_outside_every_scope_killed_by_a_signal_is_explained_with_its_service() {
    require_root("tracer watch loads eBPF programs");
    let tmp = TempDir::new("watch-host");
    // A collector that is down (nothing listens on the port) must not stop anything.
    let dead = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&[
        "--jsonl",
        &tmp.0.display().to_string(),
        "--no-incidents",
        "--settle",
        "500ms",
        "--otlp",
        &format!("http://127.0.0.1:{dead}"),
        "--metrics",
        &metrics,
    ]);
    let mut sleeper = ChildGuard(Command::new("sleep").arg("300").spawn().expect("sleep"));
    let pid = sleeper.pid();
    // Long enough for the agent's 2 s listing to know its cgroup before it dies (twice
    // over: a loaded machine may delay a listing).
    std::thread::sleep(Duration::from_millis(4500));
    let own_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    sleeper.signal(libc::SIGTERM);
    sleeper.wait_timeout(Duration::from_secs(5)).expect("sleep ended");
    let path = tmp.0.join("tracer-watch.jsonl");
    let verdict = wait_until(Duration::from_secs(15), "a killed_by_signal verdict", || {
        lines(&path).into_iter().find(|e| e["kind"] == "verdict" && e["pid"] == pid)
    });
    assert_eq!(verdict["cause"], "killed_by_signal", "{verdict:#}");
    let all = lines(&path);
    let signal = all.iter().find(|e| e["kind"] == "signal" && e["target_pid"] == pid).expect("the SIGTERM");
    assert_eq!(signal["signal_name"], "SIGTERM");
    assert_eq!(signal["pid"], std::process::id(), "the sender is this test");
    let exit = all.iter().find(|e| e["kind"] == "exit" && e["pid"] == pid).expect("the exit");
    assert_eq!(exit["signal_name"], "SIGTERM");
    // The service is the cgroup the process was in, as /proc said while it lived.
    let service = exit["service"]["cgroup"].as_str().expect("the exit names its cgroup");
    assert!(own_cgroup.lines().any(|l| l.ends_with(&format!(":{service}"))), "{service} not in\n{own_cgroup}");

    // SIGHUP: the file moved away (as logrotate does) is reopened under its name.
    let rotated = tmp.0.join("tracer-watch.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    agent.child.signal(libc::SIGHUP);
    agent.wait_for("reopened", Duration::from_secs(5));
    let mut second = ChildGuard(Command::new("sleep").arg("300").spawn().expect("sleep"));
    let pid2 = second.pid();
    second.signal(libc::SIGKILL);
    second.wait_timeout(Duration::from_secs(5)).expect("sleep ended");
    wait_until(Duration::from_secs(10), "the second kill in the reopened file", || {
        lines(&path).into_iter().find(|e| e["kind"] == "signal" && e["target_pid"] == pid2)
    });
    assert!(!lines(&rotated).iter().any(|e| e["target_pid"] == pid2), "written to the rotated file");
    // The metrics kept counting with the collector down: both kills, under the service.
    let text = scrape(&metrics);
    let term = text.lines().find(|l| l.starts_with("tracer_fatal_signals_total{") && l.contains(&format!("cgroup=\"{service}\"")) && l.contains("signal=\"SIGTERM\""));
    assert!(term.is_some_and(|l| l.contains("sender_kind=\"process\"")), "{text}");
    assert!(text.contains("tracer_verdicts_total{") && text.contains("cause=\"killed_by_signal\""), "{text}");
    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not sent"), "the records the collector never got are said at the end: {stderr}");
}

/// GET /metrics from the agent.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// A cgroup made for the test at a path of the given shape, under the memory hierarchy
/// (v1 here) or the unified one; removed with the slice it needed, on drop.
struct Shaped {
    dir: PathBuf,
    made_slice: Option<PathBuf>,
}

impl Shaped {
    fn new(slice: &str, name: &str) -> Shaped {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let root = if v1.join("memory.limit_in_bytes").exists() { v1.to_path_buf() } else { PathBuf::from("/sys/fs/cgroup") };
        let slice_dir = root.join(slice);
        let made_slice = (!slice_dir.exists()).then(|| {
            std::fs::create_dir(&slice_dir).unwrap_or_else(|e| panic!("{}: {e}", slice_dir.display()));
            slice_dir.clone()
        });
        let dir = slice_dir.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Shaped { dir, made_slice }
    }

    /// `sleep 300` moved into the cgroup before it execs.
    fn sleeper(&self) -> ChildGuard {
        let dir = self.dir.display().to_string();
        ChildGuard(
            Command::new("/bin/sh")
                .args(["-c", r#"echo $$ > "$0/cgroup.procs" && exec sleep 300"#, &dir])
                .spawn()
                .expect("sh"),
        )
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        for d in std::iter::once(&self.dir).chain(self.made_slice.as_ref()) {
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn systemd_and_docker_shaped_cgroups_name_their_unit_and_container() {
    require_root("tracer watch loads eBPF programs and the test makes cgroups");
    let me = std::process::id();
    let unit = format!("tracer-e2e-{me}.service");
    // A container id as Docker's systemd driver writes it: 64 hex digits.
    let id = format!("{:064x}", u128::from(me) << 64 | 0xfeed);
    let service = Shaped::new("system.slice", &unit);
    let container = Shaped::new("system.slice", &format!("docker-{id}.scope"));
    let tmp = TempDir::new("watch-shapes");
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&[
        "--jsonl",
        &tmp.0.display().to_string(),
        "--no-incidents",
        "--settle",
        "500ms",
        "--metrics",
        &metrics,
        "--service-ttl",
        "1s",
    ]);
    let mut a = service.sleeper();
    let mut b = container.sleeper();
    // The agent's listing (every 2 s) reads their cgroups while they live.
    std::thread::sleep(Duration::from_millis(4500));
    let (pa, pb) = (a.pid(), b.pid());
    a.signal(libc::SIGKILL);
    b.signal(libc::SIGKILL);
    a.wait_timeout(Duration::from_secs(5)).expect("a ended");
    b.wait_timeout(Duration::from_secs(5)).expect("b ended");
    let path = tmp.0.join("tracer-watch.jsonl");
    let exit_of = |pid: u32| {
        wait_until(Duration::from_secs(15), "the exit line", || {
            lines(&path).into_iter().find(|e| e["kind"] == "exit" && e["pid"] == pid)
        })
    };
    let ea = exit_of(pa);
    assert_eq!(ea["service"]["runtime"], "systemd", "{ea:#}");
    assert_eq!(ea["service"]["unit"], unit.as_str(), "{ea:#}");
    assert_eq!(ea["service"]["cgroup"], format!("/system.slice/{unit}").as_str(), "{ea:#}");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&service.dir).unwrap());
    assert_eq!(ea["service"]["cgroup_id"], ino, "{ea:#}");
    let eb = exit_of(pb);
    assert_eq!(eb["service"]["runtime"], "docker", "{eb:#}");
    assert_eq!(eb["service"]["container_id"], id.as_str(), "{eb:#}");
    // Both have series; once the container's cgroup is removed its series go after
    // --service-ttl, and the unit's, whose cgroup is still there, stay.
    let series_of = |text: &str, cgroup: &str| text.lines().filter(|l| !l.starts_with('#') && l.contains(&format!("cgroup=\"{cgroup}\""))).count();
    let (unit_cg, container_cg) = (format!("/system.slice/{unit}"), format!("/system.slice/docker-{id}.scope"));
    let text = wait_until(Duration::from_secs(15), "both services' series", || {
        let t = scrape(&metrics);
        (series_of(&t, &unit_cg) > 0 && series_of(&t, &container_cg) > 0).then_some(t)
    });
    let unit_series = series_of(&text, &unit_cg);
    drop(container);
    let text = wait_until(Duration::from_secs(15), "the removed container's series dropped", || {
        let t = scrape(&metrics);
        (series_of(&t, &container_cg) == 0).then_some(t)
    });
    assert_eq!(series_of(&text, &unit_cg), unit_series, "the live unit's series stay:\n{text}");
    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_scoped_service_growing_toward_its_limit_is_forecast_before_its_kill() {
    require_root("tracer watch loads eBPF programs and the test makes a memory cgroup");
    let cg = Memcg::new("watch-forecast", 128 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let scope = format!("/{}", cg.path.file_name().unwrap().to_str().unwrap());
    let tmp = TempDir::new("watch-forecast");
    let incident_dir = tmp.0.join("incidents");
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&[
        "--cgroup",
        &cgroup,
        "--metrics",
        &metrics,
        "--jsonl",
        &tmp.0.display().to_string(),
        "--incident-dir",
        &incident_dir.display().to_string(),
        "--settle",
        "1s",
        "--warn-before",
        "3s",
    ]);
    // 16 MiB/s into 128 MiB: the kill about 8 s in, warned once 3 s are left.
    let mut grower = ChildGuard(Command::new(stress()).args(["grow", "16", "--cgroup", &cgroup]).stdout(Stdio::null()).spawn().expect("stress"));
    let pid = grower.pid();
    // The gauge is there while the danger lasts: scraped as Prometheus would.
    let eta_line = |text: &str| {
        text.lines().find(|l| l.starts_with("tracer_memory_limit_eta_seconds{") && l.contains(&format!("cgroup=\"{scope}\""))).map(str::to_string)
    };
    let mut gauge = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while grower.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the grower was not OOM-killed in 40 s");
        if gauge.is_none() {
            gauge = eta_line(&scrape(&metrics));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let gauge = gauge.unwrap_or_else(|| panic!("no tracer_memory_limit_eta_seconds for {scope} while it grew"));
    assert!(gauge.contains("limit=\"memory_cgroup\""), "{gauge}");
    let eta: f64 = gauge.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(eta > 0.0 && eta <= 3.0, "{gauge}");

    let path = tmp.0.join("tracer-watch.jsonl");
    let forecast = wait_until(Duration::from_secs(10), "a forecast line", || lines(&path).into_iter().find(|e| e["kind"] == "forecast"));
    assert_eq!(forecast["limit"], "memory_cgroup", "{forecast:#}");
    assert_eq!(forecast["service"]["cgroup"], scope.as_str(), "{forecast:#}");
    let verdict = wait_until(Duration::from_secs(20), "the OOM verdict", || {
        lines(&path).into_iter().find(|e| e["kind"] == "verdict" && e["cause"] == "oom_killed" && e["pid"] == pid)
    });
    let summary = verdict["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("; warned ") && summary.contains(" before"), "{summary}");
    eprintln!("{summary}");
    // Out of danger (the grower is gone): the gauge goes.
    wait_until(Duration::from_secs(15), "the forecast gauge gone", || eta_line(&scrape(&metrics)).is_none().then_some(()));
    let (code, stderr) = agent.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

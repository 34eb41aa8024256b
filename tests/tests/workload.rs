//! The bug report reproduced and fixed: the workload in a small memory cgroup, a probe
//! polling it from outside. Eager loading gets the service OOM-killed after it said
//! `models_loaded: 1`, and the probe sees the connection errors; background loading
//! refuses the model that does not fit and the probe sees none. Root (cgroups).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracer_tests::{require_root, workload_bin, ChildGuard, Memcg, TempDir};
use workload::checkpoint::Arch;
use workload::probe::ProbeSummary;
use workload::synth::{self, shapes, GenSpec, Preset, StorageDtype};

const LIMIT: u64 = 256 << 20;


/// NLLB small (37 MiB) fits the cgroup; an Aya of 600 MiB does not.
fn models(tmp: &Path) -> (PathBuf, PathBuf) {
    let nllb = tmp.join("nllb");
    let aya = tmp.join("aya");
    let small = |arch| GenSpec { arch, dims: shapes::preset_dims(arch, Preset::Small), dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 1 };
    synth::generate(&small(Arch::Nllb), &nllb).unwrap();
    let dims = shapes::dims_for_bytes(Arch::Aya, 600 << 20, 4).unwrap();
    synth::generate(&GenSpec { dims, ..small(Arch::Aya) }, &aya).unwrap();
    (nllb, aya)
}

/// Starts `workload serve` in `cg` and returns it with the port it listens on.
fn serve(cg: &Memcg, load: &str, nllb: &Path, aya: &Path) -> (ChildGuard, u16, std::sync::mpsc::Receiver<String>) {
    let mut child = cg
        .command(&workload_bin())
        .args(["serve", "--port", "0", "--load", load])
        .arg("--model")
        .arg(format!("nllb={}", nllb.display()))
        .arg("--model")
        .arg(format!("aya={}", aya.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("workload never said where it listens");
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            let port = rest.split_whitespace().next().and_then(|p| p.parse().ok()).expect("port");
            return (guard, port, rx);
        }
    }
}

fn probe(port: u16, out: &Path) -> Child {
    Command::new(workload_bin())
        .args(["probe", "--interval", "20ms", "--translate-interval", "200ms", "--timeout", "3s"])
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn probe")
}

/// Stops the probe with SIGINT, as a user's Ctrl-C, and reads its summary line.
fn stop_probe(mut probe: Child, out: &Path) -> (ProbeSummary, String) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(probe.id() as i32, libc::SIGINT) };
    let status = probe.wait().expect("probe exit");
    assert!(status.success(), "probe failed: {status:?}");
    let text = std::fs::read_to_string(out).expect("probe output");
    let last = text.lines().last().expect("probe wrote nothing");
    let summary: serde_json::Value = serde_json::from_str(last).expect("summary line");
    (serde_json::from_value(summary["summary"].clone()).expect("summary"), text)
}

#[test]
fn eager_loading_in_a_small_memcg_is_oom_killed_and_the_probe_sees_the_resets() {
    require_root("workload scenarios create memory cgroups");
    let tmp = TempDir::new("workload-eager");
    let (nllb, aya) = models(&tmp.0);
    let cg = Memcg::new("workload-eager", LIMIT).expect("memory cgroup");
    let (mut server, port, log) = serve(&cg, "eager", &nllb, &aya);
    let probe_out = tmp.0.join("probe.jsonl");
    let probe = probe(port, &probe_out);

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the eager workload survived 60 s in a {} MiB cgroup", LIMIT >> 20);
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the probe hit the dead port for a while, as the clients in the report did.
    std::thread::sleep(Duration::from_millis(500));
    let (summary, records) = stop_probe(probe, &probe_out);
    let log: Vec<String> = log.try_iter().collect();

    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}\n{}", log.join("\n"));
    assert!(cg.oom_kills() >= 1, "the cgroup recorded no OOM kill");
    assert_eq!(summary.max_models_loaded, Some(1), "health never said models_loaded: 1\n{records}");
    let errors = &summary.connection_errors;
    assert!(
        errors.contains_key("ECONNRESET") || errors.contains_key("ECONNREFUSED"),
        "no ECONNRESET/ECONNREFUSED at the probe: {errors:?}\n{records}"
    );
    eprintln!("{}", summary.human());
}

#[test]
fn background_loading_in_the_same_memcg_refuses_the_big_model_and_stays_up() {
    require_root("workload scenarios create memory cgroups");
    let tmp = TempDir::new("workload-background");
    let (nllb, aya) = models(&tmp.0);
    let cg = Memcg::new("workload-background", LIMIT).expect("memory cgroup");
    let (mut server, port, log) = serve(&cg, "background", &nllb, &aya);
    let probe_out = tmp.0.join("probe.jsonl");
    let probe = probe(port, &probe_out);

    // Wait for the verdict on Aya in the server log, then keep probing a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let refusal = loop {
        let line = log.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            panic!("no decision about aya within 60 s:\n{}", seen.join("\n"));
        });
        seen.push(line.clone());
        if line.contains("not loading") && line.contains("model=aya") {
            break line;
        }
        assert!(!line.contains("READY") || !line.contains("model=aya"), "aya loaded into a {} MiB cgroup", LIMIT >> 20);
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(server.0.try_wait().unwrap().is_none(), "the service died:\n{}", seen.join("\n"));
    let (summary, records) = stop_probe(probe, &probe_out);

    assert!(refusal.contains("over memory budget") && refusal.contains("memory cgroup"), "{refusal}");
    assert_eq!(cg.oom_kills(), 0);
    assert_eq!(summary.connection_error_count(), 0, "connection errors: {:?}\n{records}", summary.connection_errors);
    assert!(summary.ok > 10, "{}", summary.human());
    let translated = records.lines().any(|l| l.contains(r#""op":"translate","outcome":"ok""#) && l.contains(r#"\"model\":\"nllb\""#));
    assert!(translated, "no translation answered by nllb:\n{records}");
    eprintln!("{}\n{refusal}", summary.human());
}

/// `GET path` (or `POST` with an empty body) on the service; the body, or None.
fn http(port: u16, method: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The state of model `name` in `/models`.
fn model_state(port: u16, name: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(&http(port, "GET", "/models")?).ok()?;
    body.as_array()?.iter().find(|m| m["name"] == name).and_then(|m| m["state"].as_str()).map(str::to_string)
}

fn wait_state(port: u16, name: &str, states: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = model_state(port, name).filter(|s| states.contains(&s.as_str())) {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} never reached {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn memcg_file(cg: &Memcg, v1: &str, v2: &str) -> u64 {
    let name = if cg.version == 1 { v1 } else { v2 };
    std::fs::read_to_string(cg.path.join(name)).unwrap().trim().parse().unwrap()
}

#[test]
fn a_model_that_needs_95_percent_of_what_is_free_loads_in_background_without_an_oom_kill() {
    lean_load_of_95_percent_of_free(synth::generate, "workload-lean");
}

/// The same for a `pytorch_model.bin` (torch.save's zip format), which candle reads tensor
/// by tensor straight into the buffers the model keeps.
#[test]
fn a_pytorch_checkpoint_that_needs_95_percent_of_what_is_free_loads_lean_too() {
    lean_load_of_95_percent_of_free(synth::generate_pytorch, "workload-lean-pth");
}

type Generate = fn(&GenSpec, &Path) -> Result<synth::GenReport, synth::GenError>;

fn lean_load_of_95_percent_of_free(generate: Generate, name: &str) {
    require_root("workload scenarios create memory cgroups");
    const LEAN_LIMIT: u64 = 512 << 20;
    let tmp = TempDir::new(name);
    let nllb = tmp.0.join("nllb");
    let small = GenSpec { arch: Arch::Nllb, dims: shapes::preset_dims(Arch::Nllb, Preset::Small), dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 1 };
    synth::generate(&small, &nllb).unwrap();
    // Aya's folder is empty at the start (its load fails); it is written once the
    // service's own memory is known, sized to what is then free.
    let aya = tmp.0.join("aya");
    std::fs::create_dir_all(&aya).unwrap();
    let cg = Memcg::new(name, LEAN_LIMIT).expect("memory cgroup");
    let (mut server, port, _log) = serve(&cg, "background", &nllb, &aya);
    assert_eq!(wait_state(port, "nllb", &["READY", "FAILED"]), "READY");
    assert_eq!(wait_state(port, "aya", &["READY", "FAILED"]), "FAILED");
    std::thread::sleep(Duration::from_millis(300));
    let free = LEAN_LIMIT - memcg_file(&cg, "memory.usage_in_bytes", "memory.current");
    let needs_at_most = free * 95 / 100;
    let target = (needs_at_most as f64 / (1.0 + workload::budget::WORKING_MEMORY_FRACTION)) as u64;
    let dims = shapes::dims_for_bytes(Arch::Aya, target, 4).unwrap();
    let report = generate(&GenSpec { arch: Arch::Aya, dims, dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 2 }, &aya).unwrap();
    let file_names: Vec<String> = report.files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    eprintln!("aya written as {}", file_names.join(", "));
    // Out of the page cache, as after a reboot: the load reads it into the page cache
    // again, charged to the service's cgroup.
    for entry in std::fs::read_dir(&aya).unwrap() {
        let f = std::fs::File::open(entry.unwrap().path()).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain syscall on an open file.
        unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let weights = workload::checkpoint::Checkpoint::open(&aya).unwrap().stored_bytes();
    let needed = workload::budget::needed_for(weights);
    eprintln!(
        "free {:.1} MiB; aya: {:.1} MiB of weights, needs {:.1} MiB = {:.1}% of free",
        free as f64 / 1048576.0,
        weights as f64 / 1048576.0,
        needed as f64 / 1048576.0,
        needed as f64 * 100.0 / free as f64
    );
    assert!((free * 90 / 100..=free * 96 / 100).contains(&needed), "the model should need about 95% of what is free");
    // Mapped and copied, as candle's own loader does, it would take about twice that.
    assert!(2 * weights > free);
    let rss_before = vm_kb(server.0.id(), "VmRSS:") * 1024;
    assert!(http(port, "POST", "/models/aya/load").is_some());
    let state = wait_state(port, "aya", &["READY", "FAILED"]);
    let body = http(port, "GET", "/models").unwrap_or_default();
    assert_eq!(state, "READY", "{body}");
    assert!(server.0.try_wait().unwrap().is_none(), "the service died");
    assert_eq!(cg.oom_kills(), 0);
    let peak = if cg.version == 1 { memcg_file(&cg, "memory.max_usage_in_bytes", "") } else { memcg_file(&cg, "", "memory.peak") };
    eprintln!("memory cgroup peak {:.1} MiB of a {} MiB limit", peak as f64 / 1048576.0, LEAN_LIMIT >> 20);
    // What the load added to the process at its peak: the weights, not more (a
    // mapped-and-copied load also holds the mapped file: about 2x without a limit, and
    // here, where the kernel reclaims mapped pages under the limit, +1.10x measured).
    let hwm = vm_kb(server.0.id(), "VmHWM:") * 1024;
    let added = hwm.saturating_sub(rss_before);
    eprintln!("VmHWM {:.1} MiB, {:.1} MiB before the load: +{:.2}x the weights", hwm as f64 / 1048576.0, rss_before as f64 / 1048576.0, added as f64 / weights as f64);
    assert!(added as f64 <= weights as f64 * 1.05, "the load added {added} bytes for {weights} of weights");
}

fn vm_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap()
}

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

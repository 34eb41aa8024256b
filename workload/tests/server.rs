//! The HTTP service, run as the real binary on loopback, with synthetic checkpoints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use workload::checkpoint::Arch;
use workload::probe::{request, Attempt};
use workload::synth::{self, shapes, GenSpec, Preset, StorageDtype};

/// A `workload serve` child, killed on drop.
struct Service {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_workload"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut service = Self { child, addr: "127.0.0.1:1".parse().unwrap(), log };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => service.addr = addr.parse().expect("listening address"),
            Err(_) => panic!("workload did not start listening; log:\n{}", service.log()),
        }
        service
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        match request(self.addr, "localhost", method, path, body.map(String::from), Duration::from_secs(30)).await {
            Attempt::Answered { status, body } => {
                (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}")))
            }
            Attempt::Failed { errno, error } => panic!("{method} {path}: {errno} {error}\nlog:\n{}", self.log()),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn model(&self, name: &str) -> Value {
        let (_, models) = self.get("/models").await;
        models.as_array().unwrap().iter().find(|m| m["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// Waits until `name` leaves UNLOADED/LOADING; returns its final status.
    async fn settled(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = self.model(name).await;
            if m["state"] == "READY" || m["state"] == "FAILED" {
                return m;
            }
            assert!(Instant::now() < deadline, "{name} never settled: {m}\nlog:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generate(arch: Arch, preset: Preset, dir: &Path) -> PathBuf {
    let spec = GenSpec { arch, dims: shapes::preset_dims(arch, preset), dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 1 };
    synth::generate(&spec, dir).unwrap();
    dir.to_path_buf()
}

fn model_arg(name: &str, dir: &Path) -> String {
    format!("{name}={}", dir.display())
}

const FR: &str = r#"{"text": "Hello, world", "source": "eng_Latn", "target": "fra_Latn"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_a_large_model_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    let dims = shapes::dims_for_bytes(Arch::Nllb, 700 << 20, 4).unwrap();
    synth::generate(&GenSpec { arch: Arch::Nllb, dims, dtype: StorageDtype::F32, shard_bytes: u64::MAX, seed: 1 }, &dir).unwrap();
    let svc = Service::start(&["--model", &model_arg("big", &dir)]);

    let (mut answered_while_loading, mut translate_refused_while_loading) = (0, 0);
    loop {
        // Health first: if the model is still LOADING afterwards, it was not READY then.
        let (status, health) = svc.get("/health").await;
        let state = svc.model("big").await["state"].clone();
        assert_eq!(status, 200, "{health}");
        if state == "LOADING" {
            answered_while_loading += 1;
            assert_eq!(health["models_loaded"], 0);
            let (status, body) = svc.post("/translate", FR).await;
            // The load may finish between the two calls; only a refusal proves anything.
            if status == 409 {
                assert!(body["error"].as_str().unwrap().contains("LOADING"), "{body}");
                translate_refused_while_loading += 1;
            }
        } else if state == "READY" || state == "FAILED" {
            break;
        }
    }
    eprintln!("health answered {answered_while_loading} times while the model was LOADING");
    assert!(answered_while_loading >= 1, "never saw the model LOADING; log:\n{}", svc.log());
    assert!(translate_refused_while_loading >= 1);
    let big = svc.model("big").await;
    assert_eq!(big["state"], "READY", "{big}");
    assert_eq!(big["loaded_bytes"], big["bytes"]);
    let (_, health) = svc.get("/health").await;
    assert_eq!(health["models_loaded"], 1);
}

#[tokio::test]
async fn over_budget_model_fails_with_its_numbers_while_the_other_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let nllb = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("nllb"));
    let aya = generate(Arch::Aya, Preset::Small, &tmp.path().join("aya"));
    let svc = Service::start(&["--model", &model_arg("nllb", &nllb), "--model", &model_arg("aya", &aya), "--memory-budget", "10MiB"]);

    assert_eq!(svc.settled("nllb").await["state"], "READY");
    let failed = svc.settled("aya").await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("over memory budget") && reason.contains("--memory-budget 10.00 MiB"), "{reason}");
    assert!(reason.contains("26.75 MiB of weights"), "{reason}");

    let (status, ready) = svc.get("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(ready["models"]["aya"]["state"], "FAILED");
    assert_eq!(ready["models"]["nllb"]["state"], "READY");
    let (status, health) = svc.get("/health").await;
    assert_eq!((status, health["models_loaded"].as_u64(), health["models_total"].as_u64()), (200, Some(1), Some(2)));

    let (status, out) = svc.post("/translate", FR).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["model"], "nllb");
    assert!(out["output_tokens"].as_u64().unwrap() > 0);
    let (status, out) = svc.post("/translate", &FR.replace("}", r#", "model": "aya"}"#)).await;
    assert_eq!(status, 409);
    assert!(out["error"].as_str().unwrap().contains("over memory budget"), "{out}");

    // A retry runs the check again and fails again with the same numbers.
    let (status, _) = svc.post("/models/aya/load", "").await;
    assert_eq!(status, 202);
    assert_eq!(svc.settled("aya").await["state"], "FAILED");
    let (status, out) = svc.post("/models/nllb/load", "").await;
    assert_eq!(status, 409, "{out}");
}

#[tokio::test]
async fn a_failed_load_can_be_retried_after_the_cause_is_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let aya = generate(Arch::Aya, Preset::Tiny, &tmp.path().join("aya"));
    let tokenizer = std::fs::read(aya.join("tokenizer.json")).unwrap();
    std::fs::remove_file(aya.join("tokenizer.json")).unwrap();
    let svc = Service::start(&["--model", &model_arg("aya", &aya)]);

    let failed = svc.settled("aya").await;
    assert_eq!(failed["state"], "FAILED");
    assert!(failed["reason"].as_str().unwrap().contains("tokenizer.json: cannot load the tokenizer"), "{failed}");
    std::fs::write(aya.join("tokenizer.json"), tokenizer).unwrap();
    let (status, _) = svc.post("/models/aya/load", "").await;
    assert_eq!(status, 202);
    assert_eq!(svc.settled("aya").await["state"], "READY");
    let (status, out) = svc.post("/translate", FR).await;
    assert_eq!((status, out["model"].as_str()), (200, Some("aya")), "{out}");
    let (status, _) = svc.get("/ready").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_requests_get_a_json_4xx_and_the_service_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let nllb = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("nllb"));
    let svc = Service::start(&["--model", &model_arg("nllb", &nllb), "--max-text-chars", "40"]);
    assert_eq!(svc.settled("nllb").await["state"], "READY");

    let cases: &[(&str, &str, u16, &str)] = &[
        ("/translate", "{not json", 400, "send {"),
        ("/translate", r#"{"text": "hi"}"#, 422, "missing field"),
        ("/translate", r#"{"text": "", "source": "eng_Latn", "target": "fra_Latn"}"#, 400, "empty"),
        ("/translate", &format!(r#"{{"text": "{}", "source": "eng_Latn", "target": "fra_Latn"}}"#, "a".repeat(41)), 413, "limit is 40"),
        ("/translate", r#"{"text": "hi", "source": "eng_Latn", "target": "klingon"}"#, 400, "no ready model translates"),
        ("/translate", r#"{"text": "hi", "source": "eng_Latn", "target": "xxx_Latn", "model": "nllb"}"#, 400, "unknown language \"xxx_Latn\""),
        ("/translate", r#"{"text": "hi", "source": "eng_Latn", "target": "fra_Latn", "model": "gpt"}"#, 404, "unknown model"),
        ("/models/gpt/load", "", 404, "unknown model"),
        ("/nowhere", "", 404, "no such endpoint"),
    ];
    for (path, body, expected, needle) in cases {
        let (status, out) = svc.post(path, body).await;
        assert_eq!(status, *expected, "{path} {body}: {out}");
        let error = out["error"].as_str().unwrap_or_else(|| panic!("{path} {body}: no error field in {out}"));
        assert!(error.contains(needle), "{path} {body}: {error:?} lacks {needle:?}");
    }
    let (status, _) = svc.post("/translate", FR).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn missing_and_corrupt_checkpoints_fail_with_the_file_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("corrupt"));
    let weights = corrupt.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let missing = tmp.path().join("missing");
    let svc = Service::start(&["--model", &model_arg("corrupt", &corrupt), "--model", &model_arg("missing", &missing)]);

    let c = svc.settled("corrupt").await;
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("corrupt weights file") && reason.contains(&weights.display().to_string()), "{reason}");
    let m = svc.settled("missing").await;
    assert!(m["reason"].as_str().unwrap().contains("not a folder"), "{m}");
    let (status, health) = svc.get("/health").await;
    assert_eq!((status, health["models_loaded"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn sharded_checkpoints_load_and_translate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("aya");
    let spec = GenSpec {
        arch: Arch::Aya,
        dims: shapes::preset_dims(Arch::Aya, Preset::Tiny),
        dtype: StorageDtype::Bf16,
        shard_bytes: 100 << 10,
        seed: 3,
    };
    let report = synth::generate(&spec, &dir).unwrap();
    assert!(report.files.len() > 1);
    let svc = Service::start(&["--model", &model_arg("aya", &dir)]);
    let m = svc.settled("aya").await;
    assert_eq!(m["state"], "READY", "{m}");
    // Stored as bf16, run as f32 on the CPU: twice the stored bytes.
    assert_eq!(m["bytes"].as_u64(), Some(report.weight_bytes * 2));
    let (status, out) = svc.post("/translate", &FR.replace("fra_Latn", "deu_Latn")).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = svc.post("/translate", &FR.replace("fra_Latn", "swh_Latn")).await;
    assert_eq!(status, 400, "aya does not know Swahili: {out}");
}

#[test]
fn sigterm_stops_the_service_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let nllb = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("nllb"));
    let mut svc = Service::start(&["--model", &model_arg("nllb", &nllb)]);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(svc.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = svc.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", svc.log());
}

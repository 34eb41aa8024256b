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
        Self::start_with_env(args, &[])
    }

    /// As [`Service::start`], with extra environment variables for the server process.
    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_workload"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
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
    // The 202 means the model has left FAILED: a client that looks at once must not
    // read the failure it just asked to retry.
    let right_after = svc.model("aya").await;
    assert!(right_after["state"] == "LOADING" || right_after["state"] == "READY", "{right_after}");
    let (status, again) = svc.post("/models/aya/load", "").await;
    assert_eq!(status, 409, "a second load while the first runs: {again}");
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

/// A reason is one short line: no newline, no backtrace frame, at most 300 characters.
fn assert_one_line(reason: &str) {
    assert!(!reason.contains('\n') && !reason.contains("  "), "not one line: {reason:?}");
    assert!(!reason.contains("candle_core::") && !reason.contains(" at /"), "a backtrace in {reason:?}");
    assert!(reason.chars().count() <= 300, "{} characters: {reason:?}", reason.chars().count());
}

/// Rewrites `dir/tokenizer.json` with `edit` applied to its JSON.
fn edit_tokenizer(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("tokenizer.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
}

#[tokio::test]
async fn failed_reasons_are_one_line_even_with_rust_backtrace_set() {
    let tmp = tempfile::tempdir().unwrap();
    // A config.json from another checkpoint: candle refuses the first tensor's shape, with
    // a backtrace attached when RUST_BACKTRACE is set.
    let mismatch = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("mismatch"));
    let config_path = mismatch.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["vocab_size"] = 1000.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let svc = Service::start_with_env(&["--model", &model_arg("mismatch", &mismatch)], &[("RUST_BACKTRACE", "1")]);

    let m = svc.settled("mismatch").await;
    assert_eq!(m["state"], "FAILED", "{m}");
    let reason = m["reason"].as_str().unwrap();
    assert_one_line(reason);
    assert!(reason.contains("weights do not match the nllb model") && reason.contains("shape mismatch"), "{reason}");
    assert!(reason.contains("config.json"), "says nothing of what to fix: {reason}");

    let (status, ready) = svc.get("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(ready["models"]["mismatch"]["reason"].as_str(), Some(reason));
    let (status, out) = svc.post("/translate", &FR.replace("}", r#", "model": "mismatch"}"#)).await;
    assert_eq!(status, 409, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(error.contains(reason) && !error.contains('\n'), "{error:?}");
    let (status, out) = svc.post("/translate", FR).await;
    assert_eq!(status, 409, "{out}");
    assert!(!out["error"].as_str().unwrap().contains('\n'), "{out}");
}

#[tokio::test]
async fn corrupt_weight_files_fail_with_a_sentence_naming_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let good = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("good"));
    let bytes = std::fs::read(good.join("model.safetensors")).unwrap();
    let mut garbage = vec![0u8; 5000];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(17);
    }
    let cases: [(&str, &str, Vec<u8>, &str); 5] = [
        ("truncated", "model.safetensors", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("cut-in-header", "model.safetensors", bytes[..20].to_vec(), "not a safetensors file"),
        ("empty", "model.safetensors", Vec::new(), "empty (0 bytes)"),
        ("garbage", "model.safetensors", garbage.clone(), "not a safetensors file"),
        ("empty-pth", "pytorch_model.bin", Vec::new(), "empty (0 bytes)"),
    ];
    let mut args = Vec::new();
    for (name, file, content, _) in &cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for keep in ["config.json", "tokenizer.json"] {
            std::fs::copy(good.join(keep), dir.join(keep)).unwrap();
        }
        std::fs::write(dir.join(file), content).unwrap();
        args.extend(["--model".to_string(), model_arg(name, &dir)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let svc = Service::start_with_env(&args, &[("RUST_BACKTRACE", "1")]);

    for (name, file, _, what) in &cases {
        let m = svc.settled(name).await;
        assert_eq!(m["state"], "FAILED", "{m}");
        let reason = m["reason"].as_str().unwrap();
        eprintln!("{name}: {reason}");
        assert_one_line(reason);
        let path = tmp.path().join(name).join(file);
        assert!(reason.starts_with(&format!("{}: corrupt weights file: ", path.display())), "{reason}");
        assert!(reason.contains(what), "{name}: {reason:?} does not say {what:?}");
        let fix = "re-download it, or regenerate it with `workload gen-model`";
        assert!(reason.contains(fix), "{name}: no fix in {reason:?}");
    }
}

#[tokio::test]
async fn a_tokenizer_that_cannot_serve_the_model_fails_the_load() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("empty"));
    edit_tokenizer(&empty, |t| {
        t["model"]["vocab"] = serde_json::json!({});
        t["added_tokens"] = serde_json::json!([]);
    });
    // Every FLORES-200 code taken out, as in a tokenizer from another model family.
    let no_codes = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("no-codes"));
    let is_code = |s: &str| workload::languages::looks_like_code(s);
    edit_tokenizer(&no_codes, |t| {
        t["model"]["vocab"].as_object_mut().unwrap().retain(|k, _| !is_code(k));
        t["added_tokens"].as_array_mut().unwrap().retain(|a| !is_code(a["content"].as_str().unwrap()));
    });
    let aya = generate(Arch::Aya, Preset::Tiny, &tmp.path().join("aya"));
    edit_tokenizer(&aya, |t| {
        t["model"]["vocab"].as_object_mut().unwrap().retain(|k, _| !k.contains("TURN_TOKEN"));
        t["added_tokens"].as_array_mut().unwrap().retain(|a| !a["content"].as_str().unwrap().contains("TURN_TOKEN"));
    });
    let svc = Service::start(&[
        "--model",
        &model_arg("empty", &empty),
        "--model",
        &model_arg("no-codes", &no_codes),
        "--model",
        &model_arg("aya", &aya),
    ]);

    for (name, dir, missing) in [
        ("empty", &empty, "its vocabulary is empty"),
        ("no-codes", &no_codes, "it has none of NLLB's language tokens (eng_Latn, fra_Latn, …)"),
        ("aya", &aya, "lacks Aya's chat-template tokens <|START_OF_TURN_TOKEN|>, <|END_OF_TURN_TOKEN|>"),
    ] {
        let m = svc.settled(name).await;
        assert_eq!(m["state"], "FAILED", "{name} loaded with an unusable tokenizer: {m}");
        let reason = m["reason"].as_str().unwrap();
        assert_one_line(reason);
        let path = dir.join("tokenizer.json");
        assert!(reason.starts_with(&format!("{}: ", path.display())), "{reason}");
        assert!(reason.contains(missing), "{name}: {reason:?} lacks {missing:?}");
        assert!(reason.ends_with("regenerate the checkpoint with `workload gen-model`"), "{name}: no fix in {reason:?}");
    }
}

#[tokio::test]
async fn request_errors_name_the_served_model_not_its_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generate(Arch::Nllb, Preset::Tiny, &tmp.path().join("nllb"));
    let svc = Service::start(&["--model", &model_arg("eng-fra", &dir)]);
    assert_eq!(svc.settled("eng-fra").await["state"], "READY");

    for body in [
        r#"{"text": "hi", "source": "eng_Latn", "target": "xxx_Latn", "model": "eng-fra"}"#,
        r#"{"text": "hi", "source": "klingon", "target": "fra_Latn", "model": "eng-fra"}"#,
    ] {
        let (status, out) = svc.post("/translate", body).await;
        assert_eq!(status, 400, "{body}: {out}");
        let error = out["error"].as_str().unwrap();
        assert!(error.contains("for model eng-fra"), "{error}");
        assert!(!error.contains("nllb"), "names the architecture, not the served model: {error}");
    }
}

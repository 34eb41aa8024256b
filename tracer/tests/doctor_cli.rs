//! `tracer doctor` as a user runs it: the built binary, as root and as `nobody`, on a
//! process in a memory cgroup made for the test, and on synthetic checkpoints written
//! with the `safetensors` crate. What it reports is compared with what the kernel says
//! through other doors (/proc/kallsyms, /sys/kernel/btf, tracefs, the cgroup's files).
//! The root-only tests say so and return early when not root.
use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use safetensors::{tensor::TensorView, Dtype};
use serde_json::Value;

/// Every row the doctor always writes (per-GPU, pid and model rows come on top).
const ALWAYS: &[&str] = &[
    "kernel",
    "kernel_config",
    "btf",
    "tracefs",
    "tracepoints.process",
    "tracepoints.signal",
    "tracepoints.oom",
    "tracepoints.mmap",
    "tracepoints.rss",
    "tracepoints.tcp",
    "kprobes",
    "privileges",
    "memlock",
    "cgroup",
    "memory_cgroup",
    "memory",
    "swap",
    "nvidia_driver",
    "workload_build",
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("doctor")
        .args(args)
        .env_remove("TRACER_LOG")
        .output()
        .expect("the tracer binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON report, after checking the process neither crashed nor disagreed with it
/// about the exit status.
fn report(o: &Output) -> Value {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{err}");
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is JSON ({e}): {}\n{err}", String::from_utf8_lossy(&o.stdout)));
    let fails = rows(&v).iter().filter(|c| c["status"] == "fail").count();
    assert_eq!(v["summary"]["fail"], fails as u64, "{v:#}");
    assert_eq!(v["summary"]["exit_status"], u64::from(fails > 0), "{v:#}");
    assert_eq!(o.status.code(), Some(i32::from(fails > 0)), "exit status vs {fails} fail rows: {v:#}");
    for c in rows(&v) {
        for key in ["name", "status", "finding", "fix"] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
        assert!(["ok", "info", "warn", "fail", "skipped"].contains(&c["status"].as_str().unwrap()), "{c}");
        if ["warn", "fail", "skipped"].contains(&c["status"].as_str().unwrap()) {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "a problem without a fix: {c}");
        }
    }
    v
}

fn rows(v: &Value) -> &Vec<Value> {
    v["checks"].as_array().expect("checks is an array")
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    rows(v).iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} row in {v:#}"))
}

fn names(v: &Value) -> BTreeSet<String> {
    rows(v).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

fn kprobes_present() -> bool {
    Path::new("/sys/kernel/debug/kprobes").is_dir()
        || std::fs::read_to_string("/proc/kallsyms")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("register_kprobe"))
}

/// Writes a model folder: config.json and one model.safetensors of zero-filled tensors.
fn checkpoint(dir: &Path, model_type: &str, tensors: &[(&str, Dtype, &[usize])]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), format!(r#"{{"model_type": "{model_type}"}}"#)).unwrap();
    let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s)| (n.to_string(), *d, s.to_vec(), vec![0u8; s.iter().product::<usize>() * d.bitsize() / 8]))
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        data.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn as_root_every_check_is_there_and_agrees_with_the_kernel() {
    if !is_root() {
        eprintln!("skipped: needs root (the unprivileged test covers the rest)");
        return;
    }
    // tracer mounts tracefs itself; the doctor only looks. Mount it as tracer would.
    if !Path::new("/sys/kernel/tracing/events").is_dir() && !Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        let st = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status().unwrap();
        assert!(st.success(), "mounting tracefs");
    }
    let o = doctor(&["--json"]);
    let v = report(&o);
    let have = names(&v);
    for name in ALWAYS {
        assert!(have.contains(*name), "{name} missing: {have:?}");
    }
    assert_eq!(v["summary"]["root"], true);
    assert_eq!(row(&v, "privileges")["status"], "ok", "{v:#}");

    let kprobes = row(&v, "kprobes");
    assert_eq!(kprobes["status"], "info");
    let finding = kprobes["finding"].as_str().unwrap();
    let expected = if kprobes_present() { "available" } else { "not available" };
    assert!(finding.starts_with(expected), "kallsyms/debugfs say {expected:?}, doctor says {finding:?}");
    assert!(finding.contains("not needed"), "{finding}");

    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        let btf = row(&v, "btf");
        assert_eq!(btf["status"], "ok", "{btf}");
        assert!(btf["finding"].as_str().unwrap().contains("task_struct.exit_code"), "{btf}");
    }
    assert_eq!(row(&v, "tracefs")["status"], "ok", "{v:#}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap(), parts.next().unwrap());
    for group in ["process", "signal", "oom", "mmap", "rss", "tcp"] {
        let tp = row(&v, &format!("tracepoints.{group}"));
        // From 6.10 on every field tracer reads is there: all ok. Before, some are info.
        let allowed: &[&str] = if version >= (6, 10) { &["ok"] } else { &["ok", "info"] };
        assert!(allowed.contains(&tp["status"].as_str().unwrap()), "{tp}");
        assert!(tp["finding"].as_str().unwrap().ends_with("present"), "{tp}");
    }
    // Present on every kernel tracer supports: tcp_send_reset (4.16).
    assert!(std::fs::read_dir("/sys/kernel/tracing/events/tcp/tcp_send_reset").is_ok());

    // The table, piped: no colour, 100 columns, one line per row at least.
    let table = doctor(&[]);
    assert_eq!(table.status.code(), o.status.code());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(!text.contains('\x1b'), "colour on a pipe: {text}");
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    assert!(text.starts_with("CHECK"), "{text}");
    for name in ALWAYS {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} not in {text}");
    }
}

#[test]
fn as_nobody_privileges_fail_with_the_fix_and_nothing_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = if is_root() {
        // A copy nobody can execute wherever the checkout lives (CI may clone under /root).
        let bin = dir.path().join("tracer");
        std::fs::copy(env!("CARGO_BIN_EXE_tracer"), &bin).unwrap();
        for p in [dir.path(), bin.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]).arg(bin);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tracer"))
    };
    cmd.env_remove("TRACER_LOG").current_dir(dir.path());
    let o = cmd.args(["doctor", "--json"]).output().expect("setpriv (util-linux) runs the doctor");
    let v = report(&o);
    assert_eq!(o.status.code(), Some(1), "not root is a fail: {v:#}");
    assert_eq!(v["summary"]["root"], false);
    let have = names(&v);
    for name in ALWAYS {
        assert!(have.contains(*name), "{name} missing as nobody: {have:?}");
    }
    let p = row(&v, "privileges");
    assert_eq!(p["status"], "fail", "{p}");
    assert!(p["finding"].as_str().unwrap().contains("not root"), "{p}");
    let fix = p["fix"].as_str().unwrap();
    assert!(fix.contains("sudo tracer") && fix.contains("setcap cap_bpf,cap_perfmon"), "{fix}");
    // tracefs is root's only by default: unknown, never failed, saying what root adds.
    let tracefs_root_only = std::fs::metadata("/sys/kernel/tracing").is_ok_and(|m| m.permissions().mode() & 0o005 == 0);
    if tracefs_root_only {
        for group in ["process", "signal", "oom", "mmap", "rss", "tcp"] {
            let tp = row(&v, &format!("tracepoints.{group}"));
            assert_eq!(tp["status"], "skipped", "{tp}");
        }
        let t = row(&v, "tracefs");
        assert!(["skipped", "warn"].contains(&t["status"].as_str().unwrap()), "{t}");
    }
    // What everyone can read is still checked.
    assert_ne!(row(&v, "kernel")["status"], "skipped");
    assert_ne!(row(&v, "memory")["status"], "skipped");

    // The table says what root would add.
    let o = cmd_again(&dir, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert!(text.contains("not root:") && text.contains("sudo tracer doctor"), "{text}");
    assert!(!stderr(&o).contains("panicked"));
}

/// The unprivileged command again, with other arguments.
fn cmd_again(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
            .arg(dir.path().join("tracer"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_tracer"))
    };
    c.arg("doctor").args(args).env_remove("TRACER_LOG").current_dir(dir.path()).output().unwrap()
}

/// A memory cgroup holding a `sleep`, from the scenario crate's guard (v1 or v2): the
/// process is killed and the cgroup removed on drop, even after a failed assertion.
struct SleepInMemcg {
    cg: scenario::Memcg,
    child: scenario::ChildGuard,
}

impl SleepInMemcg {
    /// None when there is no memory controller to make one in.
    fn create(limit: u64) -> Option<SleepInMemcg> {
        let cg = scenario::Memcg::new("doctor-test", limit).ok()?;
        let child = scenario::ChildGuard(Command::new("sleep").arg("60").spawn().unwrap());
        std::fs::write(cg.path.join("cgroup.procs"), child.pid().to_string()).unwrap();
        Some(SleepInMemcg { cg, child })
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }
}

#[test]
fn pid_in_a_memcg_reports_its_limit_and_which_models_fit_it() {
    if !is_root() {
        eprintln!("skipped: needs root to create a memory cgroup");
        return;
    }
    let Some(cg) = SleepInMemcg::create(48 << 20) else {
        eprintln!("skipped: no memory controller to create a cgroup in");
        return;
    };
    let models = tempfile::tempdir().unwrap();
    // small: 1 Mi f32 elements (4 MiB, 4.2 with working memory) fits 48 MiB.
    let small = models.path().join("small");
    checkpoint(&small, "m2m_100", &[("a", Dtype::F32, &[512, 1024]), ("b", Dtype::F32, &[512, 1024])]);
    // big: 16 Mi bf16 elements: 32 MiB on disk, 64 MiB at f32 (67.2 needed): over the
    // limit, while bf16 (33.6 MiB) would fit.
    let big = models.path().join("big");
    checkpoint(&big, "cohere", &[("w", Dtype::BF16, &[4096, 4096])]);
    let pid = cg.pid().to_string();
    let small_arg = format!("small={}", small.display());
    let big_arg = format!("big={}", big.display());
    let o = doctor(&["--pid", &pid, "--model", &small_arg, "--model", &big_arg, "--json"]);
    let v = report(&o);

    let p = row(&v, "pid");
    assert_eq!(p["status"], "ok", "{p}");
    assert!(p["finding"].as_str().unwrap().starts_with(&format!("pid {pid} (sleep)")), "{p}");
    let m = row(&v, "memory_cgroup");
    let finding = m["finding"].as_str().unwrap();
    assert!(finding.contains(&cg.cg.path.display().to_string()), "{m}");
    assert!(finding.contains("limit 48.0 MiB"), "{m}");

    let s = row(&v, "model.small");
    assert_eq!(s["status"], "ok", "{s}");
    let sf = s["finding"].as_str().unwrap();
    assert!(
        sf.contains("2 tensors (F32) in model.safetensors, 4.00 MiB stored; 4.00 MiB at f32, 2.00 MiB at bf16"),
        "{sf}"
    );
    assert!(sf.contains("needs 4.20 MiB at f32") && sf.contains("fits"), "{sf}");

    let b = row(&v, "model.big");
    assert_eq!(b["status"], "fail", "{b}");
    let bf = b["finding"].as_str().unwrap();
    assert!(bf.contains("32.0 MiB stored; 64.0 MiB at f32, 32.0 MiB at bf16"), "{bf}");
    assert!(bf.contains("model big needs 67.2 MiB at f32") && bf.contains("the memory cgroup allows 48.0 MiB"), "{bf}");
    let fix = b["fix"].as_str().unwrap();
    assert!(fix.contains("raise memory.") && fix.contains("--dtype bf16"), "{fix}");

    let t = row(&v, "models.total");
    assert_eq!(t["status"], "fail", "{t}");
    assert!(t["finding"].as_str().unwrap().starts_with("small + big loaded together"), "{t}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_model_folder_reports_its_bytes_and_a_missing_one_is_a_fail_row() {
    let models = tempfile::tempdir().unwrap();
    let dir = models.path().join("nllb");
    checkpoint(
        &dir,
        "m2m_100",
        &[("x", Dtype::F32, &[256, 256]), ("y", Dtype::BF16, &[1024]), ("z", Dtype::F32, &[10])],
    );
    let good = format!("nllb={}", dir.display());
    let o = doctor(&["--model", &good, "--json"]);
    let v = report(&o);
    let m = row(&v, "model.nllb");
    let f = m["finding"].as_str().unwrap();
    // 65536 + 1024 + 10 elements.
    assert!(f.starts_with("m2m_100, 3 tensors (BF16, F32) in model.safetensors"), "{f}");
    assert!(f.contains("258 KiB stored; 260 KiB at f32, 130 KiB at bf16"), "{f}");
    assert!(f.contains("fits"), "{f}");
    assert_eq!(m["status"], "ok", "{m}");
    assert!(!names(&v).contains("models.total"), "one model: no total row");

    let missing = models.path().join("not-here");
    let bad = format!("aya={}", missing.display());
    let o = doctor(&["--model", &good, "--model", &bad, "--json"]);
    let v = report(&o);
    let a = row(&v, "model.aya");
    assert_eq!(a["status"], "fail", "{a}");
    assert!(a["finding"].as_str().unwrap().contains(&format!("{}: no such folder", missing.display())), "{a}");
    assert!(a["fix"].as_str().unwrap().contains("NAME=DIR"), "{a}");
    assert_eq!(row(&v, "model.nllb")["status"], "ok");
    assert_eq!(o.status.code(), Some(1));

    // A malformed argument is clap's usage error, not a crash.
    let o = doctor(&["--model", "aya="]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("NAME=DIR"), "{}", stderr(&o));
}

#[test]
fn a_pid_that_does_not_exist_is_a_clear_fail_row() {
    let pid = [999_999u32, 4_194_303, i32::MAX as u32]
        .into_iter()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let pid = pid.to_string();
    let o = doctor(&["--pid", &pid, "--json"]);
    let v = report(&o);
    let p = row(&v, "pid");
    assert_eq!(p["status"], "fail", "{p}");
    assert_eq!(p["finding"].as_str().unwrap(), format!("no process with pid {pid}: its memory cgroup cannot be read"));
    assert!(p["fix"].as_str().unwrap().contains(&format!("ps -p {pid}")), "{p}");
    assert_eq!(row(&v, "memory_cgroup")["status"], "skipped");
    assert_eq!(o.status.code(), Some(1));
    // `--pid` before `doctor` belongs to tracing: a clear error.
    let o = Command::new(env!("CARGO_BIN_EXE_tracer")).args(["--pid", "1", "doctor"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tracer doctor --pid 1"), "{}", stderr(&o));
}

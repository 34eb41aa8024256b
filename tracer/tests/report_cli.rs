//! `tracer report` as a user runs it: the built binary on the testdata trace in every
//! format, on a corrupt trace (a warning naming the line, exit 0) and on an empty one
//! (a clear error). Without privileges: when the tests run as root, the binary runs as
//! `nobody`, so a report that touched eBPF or tracefs would fail here.
use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const NOBODY: u32 = 65534;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oom.jsonl")
}

/// A folder `nobody` can read and write.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Copies `text` into `dir` as a trace file `nobody` can read.
fn trace_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn tracer(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
    cmd.args(args).env_remove("TRACER_LOG");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.output().expect("the tracer binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn report_renders_text_markdown_and_json_without_privileges() {
    let dir = scratch();
    let trace = trace_file(dir.path(), "oom.jsonl", &std::fs::read_to_string(testdata()).unwrap());
    let trace = trace.to_str().unwrap();

    let text = tracer(&["report", trace]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(!stderr(&text).contains("warning"), "{}", stderr(&text));
    let out = stdout(&text);
    assert!(out.starts_with("tracer report: pid 4711 (workload serve --model nllb=/models/nllb"), "{out}");
    for section in ["Summary\n-------", "Memory\n------", "Events\n------", "Environment\n-----------"] {
        assert!(out.contains(section), "{section:?} in {out}");
    }
    assert!(out.contains("1.94 GiB at +2.900 s"), "{out}");

    let md = tracer(&["report", trace, "--format", "markdown"]);
    assert!(md.status.success(), "{}", stderr(&md));
    let out = stdout(&md);
    assert!(out.starts_with("# tracer report: pid 4711"), "{out}");
    assert!(out.contains("\n## Summary\n") && out.contains("\n## Environment\n"), "{out}");
    assert!(out.contains("| `/models/aya/model.safetensors` | 1.50 GiB |"), "{out}");

    let json = tracer(&["report", trace, "--format", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let v: Value = serde_json::from_str(&stdout(&json)).expect("json report parses");
    assert_eq!(v["target"]["pid"], 4711);
    assert_eq!(v["events"]["total"], 20);
    assert_eq!(v["events"]["lost"], 3);
    assert_eq!(v["memory"]["cgroup"]["peak_usage_bytes"], 2u64 << 30);
    assert!(v["summary"].as_array().is_some_and(|s| !s.is_empty()));
}

#[test]
fn report_writes_to_out_and_perfetto_files() {
    let dir = scratch();
    let trace = trace_file(dir.path(), "oom.jsonl", &std::fs::read_to_string(testdata()).unwrap());
    let out = dir.path().join("report.md");
    let pf = dir.path().join("trace.perfetto.json");
    let o = tracer(&[
        "report",
        trace.to_str().unwrap(),
        "--format",
        "markdown",
        "--out",
        out.to_str().unwrap(),
        "--perfetto",
        pf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("# tracer report: pid 4711"));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pf).unwrap()).unwrap();
    let events = p["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "RSS"));
    assert!(events.iter().any(|e| e["ph"] == "X" && e["name"] == "model.safetensors"));
}

#[test]
fn corrupt_line_is_a_warning_with_its_number_and_the_report_goes_on() {
    let dir = scratch();
    let good = std::fs::read_to_string(testdata()).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(4, r#"{"ts_ns": 1714564800500000000, "pid": 4711, "kind": "mmap", "addr": "#);
    let trace = trace_file(dir.path(), "corrupt.jsonl", &(lines.join("\n") + "\n"));
    let o = tracer(&["report", trace.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("warning") && err.contains("corrupt.jsonl:5:"), "{err}");
    let out = stdout(&o);
    assert!(out.contains("Trace problems") && out.contains("line 5:"), "{out}");
    assert!(out.contains("20 events"), "the other lines are read: {out}");
}

#[test]
fn empty_or_missing_trace_is_a_clear_error() {
    let dir = scratch();
    let empty = trace_file(dir.path(), "empty.jsonl", "");
    let o = tracer(&["report", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("empty.jsonl: empty trace (no events)"), "{err}");
    assert!(o.stdout.is_empty());

    let missing = dir.path().join("nope.jsonl");
    let o = tracer(&["report", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.jsonl"), "{}", stderr(&o));

    let o = tracer(&["--pid", "1", "report", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exclude each other"), "{}", stderr(&o));
}

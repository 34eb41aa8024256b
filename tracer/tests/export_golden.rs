//! The exports on a hand-built OOM trace (`tests/data/oom.jsonl`) with hand-built
//! verdicts (independent of the diagnosis rules): the markdown and text reports against
//! committed golden files, the Perfetto JSON parsed back and checked.
//!
//! After an intended change of the reports, rewrite the golden files with
//! `UPDATE_GOLDEN=1 cargo test -p tracer --test export_golden` and review the diff.
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracer::{
    diagnose::{Cause, Confidence, Link, Verdict},
    event::{Event, EventKind},
    export::{perfetto, reader, report},
};

const T0: u64 = 1_714_564_800_000_000_000;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn events() -> Vec<Event> {
    let trace = reader::read_trace_file(&data("oom.jsonl")).expect("the testdata trace reads");
    assert!(trace.problems.is_empty(), "{:?}", trace.problems);
    assert_eq!(trace.verdict_lines, 1);
    trace.events
}

fn link(events: &[Event], what: &str, pick: impl Fn(&Event) -> bool) -> Link {
    let index = events.iter().position(pick).expect("the testdata has this event");
    let e = &events[index];
    Link { index, ts_ns: e.ts_ns, kind: e.kind_name().into(), what: what.into() }
}

/// What the rules should say about this trace, written by hand.
fn verdicts(ev: &[Event]) -> Vec<Verdict> {
    let mmap = link(
        ev,
        "loader mapped /models/aya/model.safetensors (1.50 GiB)",
        |e| matches!(&e.kind, EventKind::Mmap { path: Some(p), .. } if p.ends_with("model.safetensors")),
    );
    let rss = link(
        ev,
        "anonymous memory reached 1.30 GiB",
        |e| matches!(&e.kind, EventKind::Rss { bytes, .. } if *bytes == 1331 << 20),
    );
    let signal =
        link(ev, "SIGKILL from the kernel (SI_KERNEL) to pid 4711", |e| matches!(e.kind, EventKind::Signal { .. }));
    let oom = link(ev, "OOM killer chose pid 4711 (workload): anon 1.30 GiB, file 640 MiB", |e| {
        matches!(e.kind, EventKind::OomKill { .. })
    });
    let exit = link(ev, "pid 4711 (workload) killed by SIGKILL", |e| {
        matches!(e.kind, EventKind::Exit { group_dead: true, .. })
    });
    let abort = link(
        ev,
        "RST sent to 127.0.0.1:51234 (TCP_ABORT_ON_CLOSE): closed with unread data",
        |e| matches!(&e.kind, EventKind::TcpReset { reason: Some(r), .. } if r == "TCP_ABORT_ON_CLOSE"),
    );
    let refused = link(
        ev,
        "RST sent to 127.0.0.1:51240 (NO_SOCKET): nobody listened on port 8000",
        |e| matches!(&e.kind, EventKind::TcpReset { reason: Some(r), .. } if r == "NO_SOCKET"),
    );
    vec![
        Verdict {
            cause: Cause::OomKilled,
            summary: "workload (pid 4711) was OOM-killed at its memory cgroup limit (2.00 GiB) while loading \
                      /models/aya/model.safetensors; the kernel reset its connection on port 8000"
                .into(),
            pid: Some(4711),
            comm: Some("workload".into()),
            port: Some(8000),
            resets: 1,
            first_ns: abort.ts_ns,
            last_ns: abort.ts_ns,
            chain: vec![mmap, rss, signal, oom, exit.clone(), abort],
            evidence: vec![
                "memory cgroup /sys/fs/cgroup/memory/translate: usage 2.00 GiB of its 2.00 GiB limit at +2.900 s"
                    .into(),
                "RSS grew from 310 MiB to 1.94 GiB in 2.8 s".into(),
            ],
            confidence: Confidence::High,
            action: Some("raise the memory limit above 2.00 GiB, load in bf16, or load models one at a time in the background".into()),
        },
        Verdict {
            cause: Cause::ConnectionRefused,
            summary: "after workload (pid 4711) died nobody listened on port 8000: a new connection was refused".into(),
            pid: Some(4711),
            comm: Some("workload".into()),
            port: Some(8000),
            resets: 1,
            first_ns: refused.ts_ns,
            last_ns: refused.ts_ns,
            chain: vec![exit, refused],
            evidence: vec!["the listener on 127.0.0.1:8000 belonged to pid 4711, dead since +3.020 s".into()],
            confidence: Confidence::Medium,
            action: None,
        },
    ]
}

fn check_golden(name: &str, actual: &str) {
    let path = data(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let new = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&new, actual).unwrap();
        panic!(
            "{} differs from the rendering (written to {}); if the change is intended, rerun with UPDATE_GOLDEN=1",
            path.display(),
            new.display()
        );
    }
}

fn build_report() -> report::Report {
    let ev = events();
    let v = verdicts(&ev);
    report::Report::build(&ev, v, vec![], Some("oom.jsonl".into()))
}

#[test]
fn markdown_report_matches_golden() {
    check_golden("oom.report.md", &report::render_markdown(&build_report()));
}

#[test]
fn text_report_matches_golden() {
    check_golden("oom.report.txt", &report::render_text(&build_report()));
}

#[test]
fn report_model_has_the_memory_timeline_and_environment() {
    let r = build_report();
    assert_eq!(r.target.pid, Some(4711));
    assert_eq!(r.span.end_reason.as_deref(), Some("target_exited"));
    assert_eq!(r.summary.len(), 2);
    assert!(r.summary[0].starts_with("[high] oom_killed: workload (pid 4711) was OOM-killed"), "{}", r.summary[0]);
    assert_eq!(r.memory.source, "samples");
    assert_eq!(r.memory.samples, 4);
    assert_eq!(r.memory.processes[0].peak_rss_bytes, 1990 << 20);
    assert_eq!(r.memory.processes[0].at_ns, T0 + 2_900_000_000);
    let cg = r.memory.cgroup.as_ref().unwrap();
    assert_eq!((cg.peak_usage_bytes, cg.limit_bytes), (2 << 30, Some(2 << 30)));
    assert_eq!(r.memory.mem_available_min.as_ref().unwrap().min_available_bytes, (9 << 30) + (512 << 20));
    assert_eq!(r.memory.file_mappings[0].path, "/models/aya/model.safetensors");
    assert_eq!(r.memory.file_mappings[0].bytes, 1536 << 20);
    assert_eq!(r.events.total, 20);
    assert_eq!(r.events.by_kind["tcp_reset"], 2);
    assert_eq!(r.events.lost, 3);
    assert_eq!(r.environment.kernel.as_deref(), Some("6.8.0-45-generic"));
    assert_eq!(r.environment.gpus.len(), 1);
    let json: Value = serde_json::from_str(&report::render_json(&r).unwrap()).unwrap();
    assert_eq!(json["verdicts"][0]["cause"], "oom_killed");
    assert_eq!(json["memory"]["cgroup"]["limit_bytes"], 2u64 << 30);
}

fn us(ms: f64) -> f64 {
    ms * 1000.0
}

fn perfetto_json() -> Value {
    let ev = events();
    let v = verdicts(&ev);
    let trace = perfetto::build(&ev, &v);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oom.perfetto.json");
    perfetto::write_file(&path, &trace).unwrap();
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the Perfetto trace is JSON")
}

fn all(t: &Value, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    t["traceEvents"].as_array().expect("traceEvents is an array").iter().filter(|e| pred(e)).collect()
}

fn counter<'a>(t: &'a Value, name: &str) -> Vec<(f64, &'a Value)> {
    all(t, |e| e["ph"] == "C" && e["name"] == name)
        .into_iter()
        .map(|e| (e["ts"].as_f64().unwrap(), &e["args"]))
        .collect()
}

#[test]
fn perfetto_has_names_and_memory_counters() {
    let t = perfetto_json();
    assert_eq!(t["displayTimeUnit"], "ms");
    assert!(!all(&t, |e| e["ph"] == "M"
        && e["name"] == "process_name"
        && e["pid"] == 4711
        && e["args"]["name"] == "workload")
    .is_empty());
    assert!(!all(&t, |e| e["ph"] == "M"
        && e["name"] == "thread_name"
        && e["tid"] == 4713
        && e["args"]["name"] == "loader")
    .is_empty());

    let rss = counter(&t, "RSS");
    let rss: Vec<(f64, u64)> = rss.iter().map(|(ts, a)| (*ts, a["bytes"].as_u64().unwrap())).collect();
    assert_eq!(
        rss,
        vec![(us(100.0), 310 << 20), (us(1100.0), 900 << 20), (us(2100.0), 1900 << 20), (us(2900.0), 1990 << 20)]
    );
    assert!(all(&t, |e| e["ph"] == "C" && e["name"] == "RSS").iter().all(|e| e["pid"] == 4711));
    let usage: Vec<u64> = counter(&t, "memcg usage").iter().map(|(_, a)| a["bytes"].as_u64().unwrap()).collect();
    assert_eq!(usage, vec![320 << 20, 910 << 20, 1990 << 20, 2 << 30]);
    let limit = counter(&t, "memcg limit");
    assert_eq!(limit.len(), 4);
    assert!(limit.iter().all(|(_, a)| a["bytes"] == 2u64 << 30));
    assert_eq!(counter(&t, "MemAvailable").last().unwrap().1["bytes"], (9u64 << 30) + (512 << 20));
    assert_eq!(counter(&t, "GPU 0 used").len(), 4);

    // rss events: every resident member in each sample, so the viewers stack them.
    let stat = counter(&t, "rss_stat");
    assert_eq!(stat.len(), 3);
    assert_eq!(stat[2].0, us(2600.0));
    assert_eq!(stat[2].1["MM_FILEPAGES"], 640u64 << 20);
    assert_eq!(stat[2].1["MM_ANONPAGES"], 1331u64 << 20);
}

#[test]
fn perfetto_has_instants_at_the_right_times() {
    let t = perfetto_json();
    let instant = |pred: &dyn Fn(&Value) -> bool| -> Vec<(f64, String)> {
        all(&t, |e| e["ph"] == "i" && pred(e))
            .into_iter()
            .map(|e| (e["ts"].as_f64().unwrap(), e["s"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(
        instant(&|e| e["args"]["signal_name"] == "SIGKILL" && e["args"]["si_code"] == "SI_KERNEL"),
        vec![(us(3000.0), "p".into())]
    );
    let oom = all(&t, |e| e["ph"] == "i" && e["args"]["victim_pid"] == 4711);
    assert_eq!(oom.len(), 1);
    assert_eq!((oom[0]["ts"].as_f64().unwrap(), oom[0]["s"].as_str().unwrap()), (3_000_002.0, "g"));
    assert_eq!((oom[0]["pid"].as_u64(), oom[0]["tid"].as_u64()), (Some(4711), Some(4713)));
    assert_eq!(
        instant(&|e| e["args"]["source"] == "task_exit_code" && e["args"]["signal_name"] == "SIGKILL"),
        vec![(us(3020.0), "p".into())]
    );
    let resets = all(&t, |e| e["ph"] == "i" && e["args"]["direction"] == "sent");
    let resets: Vec<(f64, &str, &str, u64, u64)> = resets
        .iter()
        .map(|e| {
            (
                e["ts"].as_f64().unwrap(),
                e["args"]["reason"].as_str().unwrap(),
                e["args"]["attributed_by"].as_str().unwrap(),
                e["pid"].as_u64().unwrap(),
                e["tid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        resets,
        vec![
            (us(3021.0), "TCP_ABORT_ON_CLOSE", "socket", 4711, 4711),
            // Attributed to the dead owner: on its main thread, not the probe's thread.
            (us(3500.0), "NO_SOCKET", "listen_port", 4711, 4711),
        ]
    );
    assert_eq!(all(&t, |e| e["ph"] == "i" && e["args"]["daddr"] == "127.0.0.1:51240")[0]["args"]["context_pid"], 5100);
}

#[test]
fn perfetto_mmap_slices_last_until_munmap_or_exit() {
    let t = perfetto_json();
    let slices = all(&t, |e| e["ph"] == "X" && e["cat"] == "mmap");
    let find = |name: &str| *slices.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} slice"));
    let model = find("model.safetensors");
    assert_eq!(model["ts"].as_f64(), Some(us(1000.0)));
    // Mapped at +1.000 s, never unmapped: ends when the process exits at +3.020 s.
    assert_eq!(model["dur"].as_f64(), Some(us(2020.0)));
    assert_eq!((model["pid"].as_u64(), model["tid"].as_u64()), (Some(4711), Some(4713)));
    assert_eq!(model["args"]["path"], "/models/aya/model.safetensors");
    assert_eq!(model["args"]["bytes"], 1536u64 << 20);
    let tok = find("tokenizer.json");
    assert_eq!(tok["ts"].as_f64(), Some(us(200.0)));
    assert_eq!(tok["dur"].as_f64(), Some(us(100.0)));
}

#[test]
fn perfetto_flows_follow_each_chain_in_order_with_one_id() {
    let t = perfetto_json();
    let ev = events();
    let v = verdicts(&ev);
    for (i, verdict) in v.iter().enumerate() {
        let id = i as u64 + 1;
        let flows = all(&t, |e| matches!(e["ph"].as_str(), Some("s" | "t" | "f")) && e["id"] == id);
        let phases: Vec<&str> = flows.iter().map(|e| e["ph"].as_str().unwrap()).collect();
        let mut expected = vec!["s"];
        expected.extend(std::iter::repeat_n("t", verdict.chain.len() - 2));
        expected.push("f");
        assert_eq!(phases, expected, "verdict {id}");
        assert_eq!(flows.last().unwrap()["bp"], "e");
        assert!(flows.iter().all(|f| f["name"] == flows[0]["name"] && f["cat"] == flows[0]["cat"]));
        let times: Vec<f64> = flows.iter().map(|e| e["ts"].as_f64().unwrap()).collect();
        let links: Vec<f64> = verdict.chain.iter().map(|l| ((l.ts_ns - T0) / 1000) as f64).collect();
        assert_eq!(times, links, "verdict {id}: flow points at the links' times, in order");
        // Each flow point lies in a chain marker slice of its own track.
        for f in &flows {
            let ts = f["ts"].as_f64().unwrap();
            let enclosing = all(&t, |s| {
                s["ph"] == "X"
                    && s["cat"] == "verdict"
                    && s["pid"] == f["pid"]
                    && s["tid"] == f["tid"]
                    && s["ts"].as_f64().unwrap() <= ts
                    && ts < s["ts"].as_f64().unwrap() + s["dur"].as_f64().unwrap()
            });
            assert_eq!(enclosing.len(), 1, "flow point {f} has one marker");
        }
    }
    // The chain's tracks are the events' own: the mmap on the loader thread.
    let first = all(&t, |e| e["ph"] == "s" && e["id"] == 1)[0];
    assert_eq!((first["pid"].as_u64(), first["tid"].as_u64()), (Some(4711), Some(4713)));
}

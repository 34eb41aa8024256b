//! The harness test: every case at its smallest size, with the binaries `cargo xtask
//! test` built (TRACER_BIN, WORKLOAD_BIN; tracer-stress next to the tracer). It checks that
//! each case produced figures (finite, non-empty; the loss accounting exact), never how
//! fast anything was. It installs nothing: cases whose external tool is missing are
//! skipped, loudly; the tracer's own cases always run. Root (it loads eBPF).
use std::path::PathBuf;

use super::{report, run_cases, tools, Bins, Case, Plan};
use crate::exec::workspace_root;

fn bin(env: &str, name: &str) -> PathBuf {
    let path =
        std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/debug").join(name));
    assert!(
        path.is_file(),
        "{} not found: build it with `cargo build --bins` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

fn finite(v: Option<f64>, what: &str) -> f64 {
    let x = v.unwrap_or_else(|| panic!("{what}: no figure"));
    assert!(x.is_finite() && x >= 0.0, "{what}: {x}");
    x
}

#[test]
fn bench_every_case_at_its_smallest_produces_figures() {
    // SAFETY: plain syscall.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark loads eBPF programs: run it as root (`sudo cargo xtask test`)"
    );
    let tracer = bin("TRACER_BIN", "tracer");
    let stress = tracer.with_file_name("tracer-stress");
    assert!(stress.is_file(), "{} not found: `cargo build --bins`", stress.display());
    let bins = Bins { tracer, stress, workload: bin("WORKLOAD_BIN", "workload") };
    let root = workspace_root();
    let tools = tools::detect(&root);
    let missing = tools.missing();
    if !missing.is_empty() {
        eprintln!(
            "\n!!! bench smoke test: SKIPPING what needs {}: not installed here. `sudo cargo xtask bench` installs \
             them (apt-get, pip in target/bench-venv); the tracer's own cases still run. !!!\n",
            missing.join(", ")
        );
    }
    let cache = std::env::temp_dir().join(format!("xtask-bench-smoke-{}", std::process::id()));
    let plan = Plan::smoke();
    let cases = [Case::Overhead, Case::Loss, Case::Latency, Case::Agent, Case::Model];
    let results = run_cases(&plan, &cases, &bins, &tools, &cache);
    let _ = std::fs::remove_dir_all(&cache);
    let results = results.expect("the benchmark at its smallest");

    let o = results.overhead.as_ref().expect("case 1");
    let expected_tools = 5 - usize::from(tools.strace.is_none()) - usize::from(tools.bpftrace.is_none());
    assert_eq!(o.tools.len(), expected_tools, "{:?}", o.skipped);
    for t in &o.tools {
        let name = t.tool.name();
        assert_eq!(t.runs.len(), plan.overhead.rounds, "{name}");
        assert_eq!(t.phases.iter().map(|p| p.phase.as_str()).collect::<Vec<_>>(), ["mem", "signals", "rst"], "{name}");
        for p in &t.phases {
            finite(p.wall_median_s, &format!("{name} {} wall", p.phase));
            finite(p.cpu_median_s, &format!("{name} {} cpu", p.phase));
            finite(p.wall_ratio, &format!("{name} {} wall ratio", p.phase));
        }
        if name != "bare" {
            finite(t.tool_cpu_median_s, &format!("{name} cpu"));
            assert!(finite(t.tool_maxrss_median_bytes, &format!("{name} rss")) > 0.0, "{name} peak rss");
            assert!(finite(t.tool_lines_median, &format!("{name} lines")) > 0.0, "{name} wrote nothing");
        }
    }
    let tracer = o.tools.iter().find(|t| t.tool.name() == "tracer").expect("tracer row");
    assert!(tracer.lost_max.is_some(), "tracer runs without trace_end");

    let loss = results.loss.as_ref().expect("case 2");
    assert_eq!(loss.rows.len(), plan.loss.sizes.len() + usize::from(plan.loss.small_ring_size.is_some()));
    for row in &loss.rows {
        assert!(row.generated > 0 && row.received > 0, "{row:?}");
        assert_eq!(row.received + row.lost, row.generated, "received + lost != generated: {row:?}");
        assert!(row.exact && row.other_mem_calls == 0, "{row:?}");
        finite(row.latency_p50_ms, "burst latency p50");
        finite(row.latency_p99_ms, "burst latency p99");
    }

    let lat = results.latency.as_ref().expect("case 3 latency");
    assert!(lat.samples as u64 >= lat.calls, "{lat:?}");
    finite(lat.p50_ms, "latency p50");
    finite(lat.p99_ms, "latency p99");

    let a = results.agent.as_ref().expect("case 6");
    assert!(a.idle_rss_max_bytes > 0 && a.rss_after_churn_bytes > 0, "{a:?}");
    finite(Some(a.idle_cpu_pct), "agent idle cpu");
    assert_eq!(a.kills_reported, a.churn_processes, "the agent missed a SIGKILL of the churn: {a:?}");
    let watch = o.tools.iter().find(|t| t.tool.name() == "tracer watch").expect("tracer watch row");
    assert!(watch.lost_max.is_some(), "tracer watch did not say what it lost");

    let m = results.model.as_ref().expect("case 4");
    assert!(m.checkpoint_bytes > 0);
    assert_eq!(m.variants.len(), 2 + usize::from(tools.python.is_some()), "{:?}", m.skipped);
    for v in &m.variants {
        assert!(finite(v.seconds_median, &v.name) > 0.0, "{}", v.name);
        finite(v.gb_per_s, &format!("{} GB/s", v.name));
        finite(v.peak_rss_over_checkpoint, &format!("{} rss/checkpoint", v.name));
        if v.name.starts_with("workload") {
            assert!(v.runs.iter().all(|r| r.health_requests.is_some()), "{}: /health not probed", v.name);
        }
    }
    assert_eq!(m.traced.iter().map(|t| t.cache.as_str()).collect::<Vec<_>>(), ["cold", "warm"]);
    for t in &m.traced {
        finite(t.ratio, &format!("{} traced/bare", t.cache));
        finite(t.ratio_without_rss, &format!("{} traced without rss/bare", t.cache));
        let without = t.traced_without_rss.as_ref().expect("the load under the tracer without the rss probe");
        assert_eq!(without.runs.len(), t.bare.runs.len(), "{}", without.name);
    }
    // Which hook the rss probe was on is read from the traced loads' own trace.
    let hook = m.rss_hook.as_deref().expect("the rss probe's hook, from a traced load's trace_start");
    assert!(hook.starts_with("kmem:rss_stat"), "{hook}");
    let warm = &m.traced[1];
    let fresh = warm.fresh_memory.as_ref().expect("the warm rounds fault fresh memory");
    assert!(finite(fresh.seconds_median, &fresh.name) > 0.0);
    assert_eq!(fresh.runs.len(), warm.bare.runs.len());
    assert!(m.traced[0].fresh_memory.is_none(), "fresh memory is a warm-cache floor");

    // The report renders and serializes, and lands where it is asked to.
    let out = std::env::temp_dir().join(format!("xtask-bench-smoke-out-{}", std::process::id()));
    let written = report::write(&results, &out).expect("writing the results");
    let md = std::fs::read_to_string(&written).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latest.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    eprintln!("{md}");
    for heading in ["## 1.", "## 2.", "## 3.", "## 4.", "## 6."] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    assert!(md.contains("| traced without rss / bare |"), "no traced-without-rss column:\n{md}");
    if tools.python.is_some() {
        assert!(md.contains("Fresh memory faulted by"), "no warm floor sentence:\n{md}");
    }
    assert_eq!(json["mode"], "smoke");
    assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c > 0));
}

#[test]
fn a_peer_that_fails_a_round_is_left_out_of_it_and_the_run_goes_on() {
    // SAFETY: plain syscall.
    assert!(unsafe { libc::geteuid() } == 0, "the benchmark loads eBPF programs: run it as root (`sudo cargo xtask test`)");
    let tracer = bin("TRACER_BIN", "tracer");
    let stress = tracer.with_file_name("tracer-stress");
    let bins = Bins { tracer, stress, workload: bin("WORKLOAD_BIN", "workload") };
    // A real program that fails at once, in bpftrace's place: it never prints `ready`.
    let tools = tools::Tools { strace: None, bpftrace: Some(PathBuf::from("/bin/false")), python: None };
    let scratch = std::env::temp_dir().join(format!("xtask-bench-peer-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let plan = Plan::smoke();
    let result = super::overhead::run(&plan.overhead, &bins, &tools, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let o = result.expect("the overhead case goes on without the failing peer");
    let names: Vec<&str> = o.tools.iter().map(|t| t.tool.name()).collect();
    assert_eq!(names, ["bare", "tracer", "tracer watch"], "{:?}", o.skipped);
    let failed = o.skipped.iter().filter(|s| s.starts_with("bpftrace: round ")).count();
    assert_eq!(failed, plan.overhead.rounds, "{:?}", o.skipped);
    assert!(o.skipped.iter().any(|s| s == "bpftrace: every round failed"), "{:?}", o.skipped);
}

//! Early warnings on the real kernel: a process leaking at a steady rate in a real memory
//! cgroup is warned about before the OOM killer acts, with a projection close to the time
//! the kill really came; a spike that fits is never a confident warning. Root; one at a
//! time.
use std::time::Duration;

use tracer::{
    diagnose::Cause,
    event::{EventKind, Forecast},
};
use tracer_tests::{require_root, stress, Memcg, Trace, TracerRun};

const T: Duration = Duration::from_secs(60);

fn forecasts(trace: &Trace) -> Vec<(u64, &Forecast)> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Forecast(f) => Some((e.ts_ns, f)),
            _ => None,
        })
        .collect()
}

fn oom_kill_ns(trace: &Trace) -> u64 {
    trace.of_kind("oom_kill").next().map(|e| e.ts_ns).unwrap_or_else(|| panic!("no oom_kill\n{}", trace.dump()))
}

#[test]
fn a_steady_leak_is_warned_before_its_kill_with_a_projection_within_a_quarter_of_the_truth() {
    require_root("end-to-end forecast tests load eBPF programs and make memory cgroups");
    let cg = Memcg::new("forecast-leak", 128 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    // 16 MiB/s into 128 MiB: the kill about 8 s in; warned once under 3 s are left.
    let trace = TracerRun::start(&["run", "--grace", "500ms", "--warn-before", "3s", "--", &stress(), "grow", "16", "--cgroup", &cgroup])
        .finish(T);
    let kill = oom_kill_ns(&trace);
    let all = forecasts(&trace);
    let Some(&(at, first)) = all.first() else { panic!("no forecast before the kill\n{}", trace.dump()) };
    let real = (kill - at) as f64 / 1e9;
    let error = (first.seconds_to_limit - real).abs() / real;
    eprintln!(
        "first warning {real:.2} s before the kill; projected {:.2} s ({:.0}% off), rate {:.1} MiB/s over {} ms ({} points, {} confidence), headroom {:.1} MiB",
        first.seconds_to_limit,
        error * 100.0,
        first.rate_bytes_per_s / 1048576.0,
        first.window_ms,
        first.points,
        first.confidence,
        first.headroom_bytes as f64 / 1048576.0
    );
    assert!(at < kill, "the warning came after the kill");
    assert!(error <= 0.25, "projected {:.2} s, the kill came {real:.2} s later: {first:?}", first.seconds_to_limit);
    assert_eq!(first.limit, "memory_cgroup", "{first:?}");
    assert!(first.limit_name.contains("forecast-leak"), "{first:?}");
    assert!(all.windows(2).all(|w| w[1].0 - w[0].0 >= 1_000_000_000), "more than one forecast a second");
    // The verdict says how far ahead the warning came.
    let v = trace.verdicts.iter().find(|v| v.cause == Cause::OomKilled).unwrap_or_else(|| panic!("no OOM verdict\n{}", trace.dump()));
    assert!(v.summary.contains("warned ") && v.summary.contains(" before"), "{}", v.summary);
    assert!(v.evidence.iter().any(|e| e.starts_with("first warning ")), "{:?}", v.evidence);
}

#[test]
fn a_spike_that_fits_and_the_flat_stretch_after_it_get_no_confident_warning() {
    require_root("end-to-end forecast tests load eBPF programs and make memory cgroups");
    let cg = Memcg::new("forecast-spike", 256 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let sh = format!("echo $$ > {cgroup}/cgroup.procs && exec {} spike 60", stress());
    let trace = TracerRun::start(&["run", "--grace", "200ms", "--", "/bin/sh", "-c", &sh]).finish(T);
    let all = forecasts(&trace);
    eprintln!("forecasts during the spike: {}", all.len());
    for (_, f) in &all {
        assert_eq!(f.confidence, "low", "a spike of a quarter of a second is no steady growth: {f:?}");
    }
    // The spike's top as sampled, and the first sample after it with most of it given
    // back: from there on the process is flat. Samples every 100 ms catch a 0.25 s spike
    // part way up (48.7 MiB of the 60 in one run), so the bounds leave room.
    let rss: Vec<(u64, u64)> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Sample { processes, .. } => processes.iter().find(|p| p.comm == "tracer-stress").map(|p| (e.ts_ns, p.rss_bytes)),
            _ => None,
        })
        .collect();
    let top = rss.iter().map(|r| r.1).max().unwrap_or_else(|| panic!("no samples\n{}", trace.dump()));
    let top_at = rss.iter().find(|r| r.1 == top).map(|r| r.0).unwrap_or(0);
    let flat_from = rss.iter().find(|r| r.0 > top_at && r.1 + (20 << 20) < top).map(|r| r.0);
    let flat_from = flat_from.unwrap_or_else(|| panic!("the spike never came down in the samples: {rss:?}"));
    assert!(top > 25 << 20, "the spike did not happen: top {top}");
    assert!(all.iter().all(|(at, _)| *at < flat_from), "a forecast once it was flat: {all:?}");
    assert!(trace.verdicts.iter().all(|v| v.cause != Cause::OomKilled), "{}", trace.dump());
    assert_eq!(trace.status, Some(0), "{}", trace.stderr);
}

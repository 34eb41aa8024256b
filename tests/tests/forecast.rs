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

/// The total of `some` stall time on the host, from the kernel.
fn host_stall_total_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/memory").ok()?;
    tracer::sample::stall::some_total_us(&text)
}

#[test]
fn memory_stalls_from_real_reclaim_are_reported_as_they_happen_and_quoted_by_the_oom_verdict() {
    require_root("end-to-end forecast tests load eBPF programs and make memory cgroups");
    let Some(before) = host_stall_total_us() else {
        eprintln!("SKIP: no /proc/pressure/memory on this kernel (PSI off): no memory-stall triggers to test");
        return;
    };
    // Page cache read through a 48 MiB cgroup: the kernel reclaims it all the time, and
    // tasks stall in that reclaim (real PSI stall, not a mock). The file must be on a
    // disk: a tmpfs file is memory already, read without reclaim.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).expect("the test tmp dir");
    let file = dir.join(format!("tracer-stall-{}.bin", std::process::id()));
    let on_tmpfs = std::process::Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs").unwrap_or(false);
    if on_tmpfs {
        eprintln!("SKIP: {} is on tmpfs: page cache there needs no reclaim", dir.display());
        return;
    }
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(file.clone());
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).expect("the file to read");
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for _ in 0..192 {
            f.write_all(&block).expect("writing the file");
        }
    }
    let cg = Memcg::new("forecast-stall", 48 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let f = file.display();
    // Read it eight times, dropping its cache first (else the first read's pages, charged
    // to the cgroup, are the next reads'), then grow into the limit.
    let sh = format!(
        "echo $$ > {cgroup}/cgroup.procs && for i in 1 2 3 4 5 6 7 8; do dd if={f} iflag=nocache count=0 status=none; cat {f} > /dev/null; done; exec {} grow 16",
        stress()
    );
    // Samples 5 s apart: a sample right after a stall is the trigger's, not the cadence's.
    let trace = TracerRun::start(&["run", "--grace", "500ms", "--sample-interval", "5s", "--stall-trigger", "10ms", "--", "/bin/sh", "-c", &sh])
        .finish(T);
    let after = host_stall_total_us().expect("still there");
    let kill = oom_kill_ns(&trace);
    let stalls: Vec<&tracer::event::Event> = trace.of_kind("memory_stall").collect();
    let first = *stalls.first().unwrap_or_else(|| panic!("no memory_stall while the cgroup reclaimed\n{}", trace.dump()));
    let EventKind::MemoryStall { scope, stall_us, window_us, total_us, .. } = &first.kind else { unreachable!() };
    eprintln!(
        "{} memory_stall events; the first {:.2} s before the kill ({scope}, {stall_us} µs within {window_us} µs, total {total_us:?}; the host's total went {before} → {after})",
        stalls.len(),
        (kill - first.ts_ns) as f64 / 1e9
    );
    assert!(first.ts_ns < kill, "the stall came after the kill");
    assert!(*window_us == 1_000_000 || *window_us == 2_000_000, "{window_us}");
    assert_eq!(*stall_us * 100, *window_us, "10 ms a second, as asked");
    // The kernel's own count: stalls happened in this run, and the event's total is one
    // the kernel had (the cgroup's file or the host's, both grow with the host's).
    let total = total_us.expect("the total read at the trigger");
    if scope == "host" {
        assert!(before < total && total <= after, "{before} < {total} <= {after}");
    }
    assert!(after > before, "the host's stall total did not move: {before} → {after}");
    // On cgroup v2 the cgroup's own trigger is armed (once a sample located the cgroup)
    // and fires on this reclaim too.
    if !cg.path.starts_with("/sys/fs/cgroup/memory") {
        let own = stalls.iter().any(|e| matches!(&e.kind, EventKind::MemoryStall { scope, name, .. } if scope == "memory_cgroup" && *name == cgroup));
        assert!(own, "no memory_stall of {cgroup} itself on cgroup v2:\n{}", trace.dump());
    }
    // At most one per window per trigger.
    let same_scope: Vec<u64> = stalls.iter().filter(|e| matches!(&e.kind, EventKind::MemoryStall { scope: s, .. } if s == scope)).map(|e| e.ts_ns).collect();
    assert!(same_scope.windows(2).all(|w| w[1] - w[0] >= window_us * 1_000 * 9 / 10), "more than one per window: {same_scope:?}");
    // A sample right after it (the trigger's), well before the 5 s cadence's next.
    let sample_after = trace.events.iter().find(|e| e.ts_ns >= first.ts_ns && e.kind_name() == "sample").map(|e| e.ts_ns - first.ts_ns);
    assert!(sample_after.is_some_and(|d| d < 500_000_000), "no sample right after the stall: {sample_after:?} ns\n{}", trace.dump());
    let v = trace.verdicts.iter().find(|v| v.cause == Cause::OomKilled).unwrap_or_else(|| panic!("no OOM verdict\n{}", trace.dump()));
    let line = v.evidence.iter().find(|e| e.starts_with("the kernel reported memory stalls ")).unwrap_or_else(|| panic!("{:?}", v.evidence));
    eprintln!("{line}");
    // A stall of this run, before the kill: no later than the trace's first one.
    let quoted = line.trim_start_matches("the kernel reported memory stalls ").split(" before the kill").next().unwrap_or("");
    let quoted_s = parse_duration_s(quoted).unwrap_or_else(|| panic!("no duration in {line:?}"));
    assert!(quoted_s > 0.0 && quoted_s <= (kill - first.ts_ns) as f64 / 1e9 + 0.05, "{line:?} vs the first stall {:.2} s before", (kill - first.ts_ns) as f64 / 1e9);
}

/// "2.9 s", "276 ms" in seconds.
fn parse_duration_s(text: &str) -> Option<f64> {
    let (n, unit) = text.split_once(' ')?;
    let n: f64 = n.parse().ok()?;
    match unit {
        "s" => Some(n),
        "ms" => Some(n / 1e3),
        "µs" => Some(n / 1e6),
        _ => None,
    }
}

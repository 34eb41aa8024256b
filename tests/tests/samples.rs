//! End-to-end: periodic `sample` events of a process allocating in a memory cgroup until
//! the OOM killer ends it. Root (cgroups, eBPF); run with `--test-threads=1`.
use std::time::Duration;

use tracer::event::{CgroupSample, EventKind, ProcessSample};
use tracer_tests::{is_root, stress_bin, Memcg, TracerRun};

const T: Duration = Duration::from_secs(60);
const LIMIT: u64 = 192 << 20;

#[test]
fn samples_show_rss_rising_in_the_memcg_and_the_oom_kill_after_death() {
    assert!(is_root(), "end-to-end sample tests create memory cgroups and load eBPF programs: run them as root");
    let cg = Memcg::new("samples", LIMIT).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let stress = stress_bin().display().to_string();
    let run = TracerRun::start(&[
        "run",
        "--sample-interval",
        "100ms",
        "--grace",
        "600ms",
        "--",
        &stress,
        "alloc",
        "--cgroup",
        &cgroup,
    ]);
    let trace = run.finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();

    let samples: Vec<(usize, Option<&ProcessSample>, Option<&CgroupSample>)> = trace
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            EventKind::Sample { processes, cgroup, system, .. } => {
                assert_eq!(e.pid, pid, "sample not about the target\n{dump}");
                assert!(system.mem_total_bytes > 0 && system.mem_available_bytes > 0, "{dump}");
                Some((i, processes.iter().find(|p| p.pid == pid), cgroup.as_ref()))
            }
            _ => None,
        })
        .collect();
    let in_memcg: Vec<_> = samples.iter().filter(|(_, _, c)| c.is_some_and(|c| c.path == cgroup)).collect();
    assert!(!in_memcg.is_empty(), "no sample names the memcg {cgroup}\n{dump}");
    for (_, _, c) in &in_memcg {
        let c = c.unwrap();
        assert_eq!((c.version, c.limit_bytes), (cg.version, Some(LIMIT)), "{c:?}\n{dump}");
    }

    // RSS rises from sample to sample while the process allocates.
    let rss: Vec<u64> = samples.iter().filter_map(|(_, p, _)| p.map(|p| p.rss_bytes)).collect();
    assert!(rss.len() >= 3, "expected several samples of the live target, got rss {rss:?}\n{dump}");
    assert!(rss.windows(2).filter(|w| w[1] > w[0]).count() >= 2, "rss does not rise: {rss:?}\n{dump}");
    assert!(*rss.last().unwrap() > 32 << 20, "rss {rss:?}\n{dump}");

    // Killed in the memcg: later samples have no target but still the memcg, with its
    // OOM kill counted.
    let exit = trace
        .position(|e| e.pid == pid && matches!(&e.kind, EventKind::Exit { group_dead: true, .. }))
        .unwrap_or_else(|| panic!("no exit for {pid}\n{dump}"));
    let after: Vec<_> = samples.iter().filter(|(i, _, _)| *i > exit).collect();
    assert!(!after.is_empty(), "no sample in the grace period\n{dump}");
    assert!(after.iter().all(|(_, p, _)| p.is_none()), "dead target sampled\n{dump}");
    assert!(
        after.iter().any(|(_, _, c)| c.is_some_and(|c| c.path == cgroup && c.oom_kills == Some(1))),
        "no post-mortem sample with the OOM kill\n{dump}"
    );
}

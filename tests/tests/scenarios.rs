//! The scenarios of `cargo xtask run-workload`, at small sizes: each reproduces its story
//! on the real kernel and the tracer's verdict, the probe's errors and the cleanup are
//! checked with the same `Outcome::check` that run-workload uses. Root.
use std::path::Path;

use scenario::{Binaries, Models, Options, Outcome, Scenario, Sizes};
use tracer_tests::{is_root, tracer_bin, workload_bin, TempDir};

fn run(scenario: Scenario, models: &Path) -> (Outcome, TempDir) {
    assert!(is_root(), "scenarios create memory cgroups and load eBPF: run them as root (`cargo xtask test` does, through sudo)");
    let out = TempDir::new(scenario.name());
    let options = Options {
        scenario,
        bins: Binaries { tracer: tracer_bin(), workload: workload_bin() },
        sizes: Sizes::SMALL,
        models: Models::Synthetic { cache: models.to_path_buf() },
        out_dir: out.0.join("run"),
        tui: false,
        verbose: true,
    };
    let outcome = scenario::run(&options).unwrap_or_else(|e| panic!("{scenario}: {e:#}"));
    (outcome, out)
}

/// What to show when a check fails: the verdicts, the probe, the logs.
fn explain(o: &Outcome) -> String {
    let read = |name: &str| std::fs::read_to_string(o.out_dir.join(name)).unwrap_or_default();
    format!(
        "verdicts: {:#?}\nprobe: {}\nserver: {:?}\ntracer.log:\n{}",
        o.verdicts,
        o.probe,
        o.server_end,
        read("tracer.log").lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn assert_clean(o: &Outcome) {
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/memory")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(&format!("-{}", std::process::id())))
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("tracer-{}", o.scenario.name())))
        .collect();
    assert!(leftovers.is_empty(), "cgroup left behind: {leftovers:?}");
    assert!(!Path::new(&format!("/proc/{}", o.server_pid)).exists(), "server {} still running", o.server_pid);
    for file in [&o.trace, &o.report, &o.perfetto, &o.probe_records] {
        assert!(file.is_file(), "{} missing", file.display());
    }
}

#[test]
fn every_scenario_shows_its_story_and_cleans_up() {
    let models = TempDir::new("scenario-models");
    for scenario in Scenario::ALL {
        let (outcome, _out) = run(scenario, &models.0);
        if let Err(why) = outcome.check() {
            panic!("{scenario}: {why}\n{}", explain(&outcome));
        }
        assert_clean(&outcome);
        if scenario == Scenario::OomDuringLoad {
            // The second model's load is a step of a fraction of a second; the forecast
            // still comes before the kill, and the verdict says how long before.
            let v = outcome.verdicts.iter().find(|v| v["cause"] == "oom_killed").expect("checked above");
            let summary = v["summary"].as_str().unwrap_or_default();
            assert!(summary.contains("; warned ") && summary.contains(" before"), "oom-during-load: {summary}");
            eprintln!("oom-during-load: {summary}");
        }
        if scenario == Scenario::Fixed {
            // The lean loader fits what the old one (twice the weights at its peak) could not.
            let models = outcome.models.as_ref().and_then(|m| m.as_array().cloned()).unwrap_or_default();
            let small = models.iter().find(|m| m["name"] == scenario::run::AYA_SMALL);
            assert_eq!(small.map(|m| &m["state"]), Some(&serde_json::Value::from("READY")), "fixed: {models:?}");
            let sizes = Sizes::SMALL;
            assert!(sizes.nllb + sizes.aya_small < sizes.limit && sizes.nllb + 2 * sizes.aya_small > sizes.limit);
        }
        let trace = tracer::export::reader::read_trace_file(&outcome.trace).unwrap_or_else(|e| panic!("{scenario}: {e}"));
        let done = tracer_tests::facts::assert_true(&trace.events, &format!("the {scenario} scenario's trace"));
        // Every scenario maps its checkpoint; the ones with verdicts name processes.
        let named = outcome.verdicts.is_empty() || done.names > 0 && done.chains > 0;
        assert!(done.files_on_disk > 0 && named, "{scenario}: the fact-check found nothing to check: {done:?}");
        eprintln!("{scenario}: fact-check {done:?}");
        eprintln!("{scenario}: ok: {:?}, probe errors {:?}", outcome.causes(), outcome.connection_errors());
    }
}

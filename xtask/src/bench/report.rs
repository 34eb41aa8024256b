//! The results of one benchmark run: rendered as a markdown table (printed, and written
//! with the JSON next to it as `bench/results/<UTC time>-<mode>.{md,json}` and
//! `latest.{md,json}`).
use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    latency::Latency,
    loss::Loss,
    machine::Machine,
    model::ModelLoad,
    overhead::{Overhead, ToolSummary},
    steady::Steady,
    stats::ratio,
    stress::Tool,
};

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub started_utc: String,
    pub mode: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub overhead: Option<Overhead>,
    pub loss: Option<Loss>,
    pub latency: Option<Latency>,
    pub steady: Option<Steady>,
    pub agent: Option<super::agent::Agent>,
    pub model: Option<ModelLoad>,
    /// Cases or tools left out, with why.
    pub skipped: Vec<String>,
    pub bpftrace_script: String,
}

/// Writes `<stem>.md`, `<stem>.json` and the `latest` copies into `dir`; returns the
/// markdown path.
pub fn write(results: &Results, dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = markdown(results);
    let json = serde_json::to_string_pretty(results).context("serializing the results")? + "\n";
    let stem = format!("{}-{}", results.started_utc.replace(':', "-"), results.mode);
    for (name, text) in [
        (format!("{stem}.md"), &md),
        (format!("{stem}.json"), &json),
        ("latest.md".into(), &md),
        ("latest.json".into(), &json),
    ] {
        std::fs::write(dir.join(&name), text).with_context(|| format!("writing {}", dir.join(&name).display()))?;
    }
    Ok(dir.join(format!("{stem}.md")))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn times(v: Option<f64>) -> String {
    opt(v, |x| format!("{x:.2}×"))
}

fn secs(v: Option<f64>) -> String {
    opt(v, |x| if x < 1.0 { format!("{:.1} ms", x * 1e3) } else { format!("{x:.2} s") })
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn ms(v: Option<f64>) -> String {
    opt(v, |x| if x < 10.0 { format!("{x:.2} ms") } else { format!("{x:.0} ms") })
}

fn mib(bytes: f64) -> String {
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "# tracer benchmark: {} run, {}\n", r.mode, r.started_utc);
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), Linux {}, {:.1} GiB RAM, {}; load average at start {}. Commit {}. Whole run: {:.0} s.\n",
        m.cpu_model, m.cores, m.kernel, m.mem_total_gib, m.os, m.load_avg_at_start, m.git_commit, r.duration_s
    );
    let versions: Vec<String> = m.versions.iter().map(|(k, v)| format!("{k}: `{v}`")).collect();
    let _ = writeln!(s, "Versions: {}.\n", versions.join("; "));
    goals(&mut s, r);
    if let Some(o) = &r.overhead {
        overhead(&mut s, o);
    }
    if let Some(l) = &r.loss {
        loss(&mut s, l);
    }
    cost_and_latency(&mut s, r);
    if let Some(st) = &r.steady {
        steady(&mut s, st);
    }
    if let Some(a) = &r.agent {
        agent(&mut s, a);
    }
    if let Some(ml) = &r.model {
        model(&mut s, ml);
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "## Not measured in this run\n");
        for k in &r.skipped {
            let _ = writeln!(s, "- {k}");
        }
        s.push('\n');
    }
    notes(&mut s, r);
    s
}

/// One goal: what is measured, the goal, this run's figure, and whether it met it.
struct Goal {
    what: &'static str,
    goal: String,
    figure: Option<String>,
    met: Option<bool>,
}

/// The goals of the tracer's cost, each with this run's figure: the table a reader
/// checks first. A goal this run did not measure says so.
fn goals(s: &mut String, r: &Results) {
    let mut rows: Vec<Goal> = Vec::new();
    let le = |what, goal: f64, v: Option<f64>, unit: &str| Goal {
        what,
        goal: format!("≤ {goal}{unit}"),
        figure: v.map(|x| format!("{x:.2}{unit}")),
        met: v.map(|x| x <= goal),
    };
    let tracer = r.overhead.as_ref().and_then(|o| o.tools.iter().find(|t| t.tool == Tool::Tracer));
    let phase = |name: &str| tracer.and_then(|t| t.phases.iter().find(|p| p.phase == name)).and_then(|p| p.wall_ratio);
    rows.push(le("mem case, target wall traced / bare", 1.30, phase("mem"), "×"));
    rows.push(le("signals case, target wall", 1.50, phase("signals"), "×"));
    rows.push(le("rst case, target wall", 1.20, phase("rst"), "×"));
    rows.push(le("all cases together, target wall", 1.30, tracer.and_then(|t| t.total_wall_ratio), "×"));
    let watch = r.overhead.as_ref().and_then(|o| o.tools.iter().find(|t| t.tool == Tool::Watch));
    rows.push(le("all cases in an unscoped process, wall under `tracer watch` / bare", 1.05, watch.and_then(|t| t.total_wall_ratio), "×"));
    let burst = r.loss.as_ref().and_then(|l| l.rows.iter().find(|row| row.generated == 1_000_000 && row.ring_buffer == "16MiB"));
    rows.push(le(
        "10^6 mmap burst: bare calls/s over traced calls/s",
        1.30,
        burst.map(|b| b.bare_calls_per_s / b.calls_per_s.max(1.0)),
        "×",
    ));
    rows.push(Goal {
        what: "10^6 mmap burst, default ring: lost",
        goal: "0".into(),
        figure: burst.map(|b| b.lost.to_string()),
        met: burst.map(|b| b.lost == 0),
    });
    rows.push(le("tracer peak RSS in the 10^6 burst", 64.0, burst.map(|b| b.tracer_maxrss_bytes as f64 / (1u64 << 20) as f64), " MiB"));
    rows.push(le("kernel event → JSON line, p99 at a steady rate", 50.0, r.latency.as_ref().and_then(|l| l.p99_ms), " ms"));
    rows.push(le("kernel event → JSON line, p99 in the 10^6 burst", 100.0, burst.and_then(|b| b.latency_p99_ms), " ms"));
    let plain = r.steady.as_ref().and_then(|s| s.runs.iter().find(|x| x.format == "jsonl"));
    rows.push(Goal {
        what: "tracer CPU at a steady ~10k events/s (plain trace)",
        goal: "≤ 5% of a core".into(),
        figure: plain.map(|p| format!("{:.1}% at {:.0} events/s", p.tracer_cpu_pct, p.events_per_s)),
        met: plain.map(|p| p.tracer_cpu_pct <= 5.0),
    });
    let soak = r.steady.as_ref().and_then(|s| s.soak.as_ref());
    rows.push(Goal {
        what: "tracer memory over a soak at that rate, after the first minute",
        goal: format!("flat (≤ +{:.0}%)", super::steady::FLAT_TOLERANCE * 100.0),
        figure: soak.and_then(|s| {
            Some(format!(
                "{} at 1 min, {} max after, over {:.0} min",
                mib(s.rss_at_1min_bytes? as f64),
                mib(s.rss_max_after_1min_bytes? as f64),
                s.seconds / 60.0
            ))
        }),
        met: soak.and_then(|s| s.growth_after_1min()).map(|g| g <= super::steady::FLAT_TOLERANCE),
    });
    let agent = r.agent.as_ref();
    rows.push(le("`tracer watch` CPU on an idle host, /metrics scraped every second", 1.0, agent.map(|a| a.idle_cpu_pct), "% of a core"));
    rows.push(le("`tracer watch` RSS on an idle host", 64.0, agent.map(|a| a.idle_rss_max_bytes as f64 / (1u64 << 20) as f64), " MiB"));
    rows.push(le(
        "`tracer watch` RSS after processes and cgroups came and went by the thousand",
        64.0,
        agent.map(|a| a.rss_after_churn_bytes as f64 / (1u64 << 20) as f64),
        " MiB",
    ));
    let agent_soak = agent.and_then(|a| a.soak.as_ref());
    rows.push(Goal {
        what: "`tracer watch` memory over a soak with churn, once its caches are full (`--service-ttl` + 1 min)",
        goal: format!("flat (≤ +{:.0}%)", super::steady::FLAT_TOLERANCE * 100.0),
        figure: agent_soak.and_then(|s| {
            Some(format!(
                "{} at {:.0} min, {} max after, over {:.0} min ({} processes, {} cgroups)",
                mib(s.rss_at_warm_up_bytes? as f64),
                s.warm_up_s / 60.0,
                mib(s.rss_max_after_warm_up_bytes? as f64),
                s.seconds / 60.0,
                s.processes,
                s.cgroups
            ))
        }),
        met: agent_soak.and_then(|s| s.growth_after_warm_up()).map(|g| g <= super::steady::FLAT_TOLERANCE),
    });
    let background = r.model.as_ref().and_then(|m| m.variants.iter().find(|v| v.name.contains("--load background")));
    rows.push(le("model load peak RSS / checkpoint (background, f32)", 1.10, background.and_then(|v| v.peak_rss_over_checkpoint), "×"));
    rows.push(le("a (re)started service answers /health (background load)", 100.0, background.and_then(|v| v.first_health_ms), " ms"));
    for t in r.model.iter().flat_map(|m| &m.traced) {
        rows.push(Goal {
            what: if t.cache == "cold" { "model load under the tracer / bare, cold cache" } else { "model load under the tracer / bare, warm cache" },
            goal: format!("≤ {}×", super::model::TRACED_LOAD_GOAL),
            figure: t.ratio.map(|x| match t.ratio_without_rss {
                Some(w) => format!("{x:.3}× ({w:.3}× without the rss probe)"),
                None => format!("{x:.3}×"),
            }),
            met: t.ratio.map(|x| x <= super::model::TRACED_LOAD_GOAL),
        });
        if t.cache == "warm" {
            let goal = super::model::WARM_OVER_PYTHON_GOAL;
            rows.push(Goal {
                what: "model load speed over Python safetensors, warm cache",
                goal: format!("≥ {goal}×"),
                figure: t.speed_over_python.map(|x| format!("{x:.2}×")),
                met: t.speed_over_python.map(|x| x >= goal),
            });
        } else {
            rows.push(le("model load seconds over `dd` reading the file, cold cache", super::model::COLD_OVER_DD_GOAL, t.seconds_over_dd, "×"));
        }
    }
    let _ = writeln!(s, "## Goals\n");
    let _ = writeln!(s, "| figure | goal | this run | met |");
    let _ = writeln!(s, "|---|---:|---:|:---:|");
    for g in rows {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {} | {met} |", g.what, g.goal, g.figure.unwrap_or_else(|| "–".into()));
    }
    if soak.is_none() {
        let _ = writeln!(s, "\nThe soak runs with `cargo xtask bench --soak 30m` (off by default).");
    }
    s.push('\n');
}

fn overhead(s: &mut String, o: &Overhead) {
    let p = &o.plan;
    let _ = writeln!(s, "## 1. Overhead on the target (ratio to the bare run, median of {} runs)\n", p.rounds);
    let _ = writeln!(
        s,
        "The stress program (`tracer-stress bench`) times itself: **mem** = {} × (mmap 64 KiB, touch its 16 pages, \
         munmap); **signals** = {} × SIGUSR1 to itself (tgkill, handled); **rst** = {} × (loopback connect, accept, \
         close with SO_LINGER 0: one RST each). Wall = its wall clock, CPU = its user+system time (kernel time in BPF \
         programs and ptrace stops is charged here).\n",
        count(p.mem),
        count(p.signals),
        count(p.rst)
    );
    let names: Vec<String> =
        o.tools.first().map(|t| t.phases.iter().map(|p| p.phase.clone()).collect()).unwrap_or_default();
    let mut head = "| tool |".to_string();
    let mut rule = "|---|".to_string();
    for n in names.iter().map(String::as_str).chain(["all"]) {
        let _ = write!(head, " {n} wall | {n} CPU |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for t in &o.tools {
        let mut row = format!("| {} |", t.tool.name());
        if t.tool == Tool::Bare {
            for p in &t.phases {
                let _ = write!(row, " {} | {} |", secs(p.wall_median_s), secs(p.cpu_median_s));
            }
            let wall: Option<f64> = t.phases.iter().map(|p| p.wall_median_s).sum();
            let cpu: Option<f64> = t.phases.iter().map(|p| p.cpu_median_s).sum();
            let _ = write!(row, " {} | {} |", secs(wall), secs(cpu));
        } else {
            for p in &t.phases {
                let _ = write!(row, " {} | {} |", times(p.wall_ratio), times(p.cpu_ratio));
            }
            let _ = write!(row, " {} | {} |", times(t.total_wall_ratio), times(t.total_cpu_ratio));
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s, "\nThe bare row is in seconds (median); the others are ratios to it.");
    if let Some(bare) = o.tools.iter().find(|t| t.tool == Tool::Bare) {
        let wall: Option<f64> = bare.phases.iter().map(|p| p.wall_median_s).sum();
        let cpu: Option<f64> = bare.phases.iter().map(|p| p.cpu_median_s).sum();
        if let Some(busy) = ratio(wall, cpu).filter(|r| *r > 1.3) {
            let _ = writeln!(
                s,
                "**Busy machine**: untraced, the target's wall time was {busy:.1}× its CPU time (it waited for a CPU; \
                 see the load average above): trust the CPU ratios more than the wall ratios in this run."
            );
        }
    }
    let noisy: Vec<String> = o
        .tools
        .iter()
        .flat_map(|t| t.phases.iter().map(move |p| (t.tool.name(), p)))
        .filter_map(|(tool, p)| p.wall_spread.filter(|x| *x > 1.5).map(|x| format!("{tool} {} {x:.1}×", p.phase)))
        .collect();
    if !noisy.is_empty() {
        let _ = writeln!(
            s,
            "Noisy figures (slowest / fastest run above 1.5×; every run is in the JSON): {}.",
            noisy.join(", ")
        );
    }
    for k in &o.skipped {
        let _ = writeln!(s, "Skipped: {k}.");
    }
    s.push('\n');
}

fn loss(s: &mut String, l: &Loss) {
    let _ =
        writeln!(s, "## 2. Loss (`tracer --pid PID --probes mmap --ring-buffer SIZE`, trace read through a pipe)\n");
    let _ = writeln!(
        s,
        "| burst (calls) | ring buffer | calls/s traced (bare) | received | lost | received + lost = generated | other mmap/munmap | tracer CPU | tracer peak RSS |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|");
    for row in &l.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} k ({:.0} k) | {} | {} | {} | {} | {:.2} s | {} |",
            count(row.generated),
            row.ring_buffer,
            row.calls_per_s / 1e3,
            row.bare_calls_per_s / 1e3,
            count(row.received),
            count(row.lost),
            if row.exact {
                "yes, exactly".to_string()
            } else {
                format!("**NO** (off by {})", row.generated as i64 - (row.received + row.lost) as i64)
            },
            row.other_mem_calls,
            row.tracer_cpu_s,
            mib(row.tracer_maxrss_bytes as f64)
        );
    }
    s.push('\n');
}

fn cost_row(s: &mut String, t: &ToolSummary) {
    let lost = match (t.tool, t.lost_max) {
        (_, Some(n)) => count(n),
        (Tool::Strace, None) => "none (it stops the target)".into(),
        _ => "?".into(),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} |",
        t.tool.name(),
        secs(t.tool_cpu_median_s),
        opt(t.tool_maxrss_median_bytes, mib),
        opt(t.tool_lines_median, |n| count(n as u64)),
        lost
    );
}

fn agent(s: &mut String, a: &super::agent::Agent) {
    let _ = writeln!(s, "## 6. `tracer watch` left on the host (`tracer watch --no-incidents --metrics PORT --jsonl DIR`)\n");
    let _ = writeln!(s, "| phase | seconds | agent CPU | agent RSS |\n|---|---:|---:|---:|");
    let _ = writeln!(s, "| idle, /metrics scraped every second | {:.0} | {:.2}% of a core | {} (max) |", a.idle_s, a.idle_cpu_pct, mib(a.idle_rss_max_bytes as f64));
    let _ = writeln!(
        s,
        "| churn: {} processes killed by SIGKILL, {} of them in a memory cgroup made and removed for it | {:.0} | {:.1}% of a core | {} (after) |",
        a.churn_processes,
        a.churn_cgroups,
        a.churn_s,
        a.churn_cpu_pct,
        mib(a.rss_after_churn_bytes as f64)
    );
    if let Some(k) = &a.soak {
        let _ = writeln!(
            s,
            "| soak: a process killed every 100 ms, a cgroup every second ({} and {}) | {:.0} | {:.2}% of a core | {} at {:.0} min, {} max after |",
            k.processes,
            k.cgroups,
            k.seconds,
            k.cpu_pct,
            opt(k.rss_at_warm_up_bytes.map(|b| b as f64), mib),
            k.warm_up_s / 60.0,
            opt(k.rss_max_after_warm_up_bytes.map(|b| b as f64), mib)
        );
    }
    if let Some(k) = a.soak.as_ref().filter(|k| !k.rss.is_empty()) {
        // The curve at five-minute marks: growth that stops is bounded caches filling up.
        let marks: Vec<String> = (0..)
            .map(|m| m as f64 * 300.0)
            .take_while(|t| *t <= k.seconds)
            .filter_map(|t| k.rss.iter().find(|(at, _)| *at >= t).map(|&(at, r)| format!("{:.0} min {}", at / 60.0, mib(r as f64))))
            .collect();
        let _ = writeln!(s, "\nSoak RSS every five minutes: {}.", marks.join(", "));
    }
    let _ = writeln!(s, "\nThe agent wrote {} lines and reported {} of the churn's SIGKILLs.\n", count(a.lines), count(a.kills_reported));
}

fn cost_and_latency(s: &mut String, r: &Results) {
    let _ = writeln!(s, "## 3. Tracer cost\n");
    if let Some(o) = &r.overhead {
        let _ = writeln!(
            s,
            "Each tool's own CPU time and peak RSS during one case-1 run (median), what it wrote, and the most \
         events it said it lost in a run:\n"
        );
        let _ = writeln!(s, "| tool | its CPU | its peak RSS | lines written | lost |\n|---|---:|---:|---:|---:|");
        for t in o.tools.iter().filter(|t| t.tool != Tool::Bare) {
            cost_row(s, t);
        }
        s.push('\n');
    }
    let _ = writeln!(s, "Latency from the kernel event (`ts_ns`) to its JSON line arriving on the pipe:\n");
    let _ = writeln!(s, "| load | events | p50 | p99 | max |\n|---|---:|---:|---:|---:|");
    if let Some(l) = &r.latency {
        let _ = writeln!(
            s,
            "| steady: {} mmap/munmap calls, a pair every {} µs (all probes) | {} | {} | {} | {} |",
            count(l.calls),
            l.pace_us,
            count(l.samples as u64),
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        );
    }
    if let Some(loss) = &r.loss {
        for row in &loss.rows {
            let _ = writeln!(
                s,
                "| burst of {} calls, {} ring (case 2) | {} | {} | {} | – |",
                count(row.generated),
                row.ring_buffer,
                count(row.received),
                ms(row.latency_p50_ms),
                ms(row.latency_p99_ms)
            );
        }
    }
    s.push('\n');
}

fn steady(s: &mut String, st: &Steady) {
    let _ = writeln!(
        s,
        "## 5. Left attached at a steady rate\n\nThe tracer attached by pid (all probes, samples every 100 ms) to \
         the stress program making an mmap+munmap pair every {} µs; its CPU from /proc over the run, its RSS sampled \
         every second, the trace file's size over its lines.\n",
        st.pace_us
    );
    let _ = writeln!(s, "| run | length | events/s | tracer CPU | RSS at start → end (max) | trace | bytes/event |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, r) in st.runs.iter().map(|r| ("steady", r)).chain(st.soak.iter().map(|r| ("soak", r))) {
        let first = r.rss.first().map(|&(_, b)| mib(b as f64)).unwrap_or_else(|| "–".into());
        let end = r.rss_end_bytes.map(|b| mib(b as f64)).unwrap_or_else(|| "–".into());
        let max = r.rss.iter().map(|&(_, b)| b).max().map(|b| mib(b as f64)).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {label}, {} | {:.0} s | {:.0} | {:.1}% | {first} → {end} ({max}) | {} | {:.1} |",
            r.format,
            r.seconds,
            r.events_per_s,
            r.tracer_cpu_pct,
            mib(r.trace_bytes as f64),
            r.bytes_per_event
        );
    }
    s.push('\n');
}

fn model(s: &mut String, m: &ModelLoad) {
    let _ = writeln!(
        s,
        "## 4. Model load (synthetic NLLB `{}` checkpoint, {:.2} GB f32 safetensors, CPU; {}; median of {} run(s))\n",
        m.plan.preset,
        m.checkpoint_bytes as f64 / 1e9,
        if m.cold_cache {
            "page cache dropped before each load"
        } else {
            "page cache NOT dropped (not root): warm loads"
        },
        m.plan.runs
    );
    let _ = writeln!(
        s,
        "| loader | seconds | GB/s | peak RSS / checkpoint | first /health after start | /health p50 while loading | /health p99 | /health probes (failed) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for v in &m.variants {
        let probes = v
            .runs
            .iter()
            .map(|r| r.health_requests.zip(r.health_errors))
            .try_fold((0, 0), |(n, e), r| r.map(|(rn, re)| (n + rn, e + re)));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            v.name,
            secs(v.seconds_median),
            opt(v.gb_per_s, |x| format!("{x:.2}")),
            times(v.peak_rss_over_checkpoint),
            ms(v.first_health_ms),
            ms(v.health_p50_ms),
            ms(v.health_p99_ms),
            probes.map(|(n, e)| format!("{n} ({e})")).unwrap_or_else(|| "–".into())
        );
    }
    if !m.traced.is_empty() {
        let _ = writeln!(
            s,
            "\nThe eager load under `tracer run --no-tui` (all probes), and under it with every probe group but `rss` \
             (`--probes {}`), beside bare runs of the same kind, alternating:\n",
            super::model::ALL_BUT_RSS
        );
        let _ = writeln!(s, "| cache | bare seconds | traced seconds | traced / bare | goal | met | traced without rss / bare |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|:---:|---:|");
        for t in &m.traced {
            let goal = super::model::TRACED_LOAD_GOAL;
            let met = t.ratio.map_or("–", |x| if x <= goal { "yes" } else { "**no**" });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | ≤ {goal}× | {met} | {} |",
                t.cache,
                secs(t.bare.seconds_median),
                secs(t.traced.seconds_median),
                opt(t.ratio, |x| format!("{x:.3}×")),
                opt(t.ratio_without_rss, |x| format!("{x:.3}×"))
            );
        }
        let how = match m.rss_hook.as_deref() {
            Some(h) if h.contains("BTF") => format!(
                "on the BTF tracepoint here (`{h}`): the kernel passes the mm and the counter, and the program reads and \
                 sums the counters itself only near its threshold"
            ),
            Some(h) => format!(
                "on the classic tracepoint here (`{h}`): the kernel builds its record (summing the per-CPU RSS counter \
                 under its lock) before any program runs"
            ),
            None => "on a hook this run did not record".to_string(),
        };
        let _ = writeln!(
            s,
            "\nThe difference between the two traced columns is the rss probe: `rss_stat` fires on every page a load \
             faults in. The probe was {how}."
        );
    }
    if m.traced.iter().any(|t| t.python.is_some() || t.dd.is_some()) {
        let _ = writeln!(s, "\nSpeed: the same bare eager loads beside Python `safetensors.numpy.load_file` and `dd` (bs=8M, to /dev/null) reading the same files, in the same rounds:\n");
        let _ = writeln!(s, "| cache | workload seconds (GB/s) | python seconds (GB/s) | dd seconds (GB/s) | fresh memory faulted, seconds | workload speed / python | workload seconds / dd |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let cell = |v: Option<&super::model::Variant>| match v {
            Some(v) => format!("{} ({})", secs(v.seconds_median), opt(v.gb_per_s, |x| format!("{x:.2}"))),
            None => "–".into(),
        };
        for t in &m.traced {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.cache,
                cell(Some(&t.bare)),
                cell(t.python.as_ref()),
                cell(t.dd.as_ref()),
                secs(t.fresh_memory.as_ref().and_then(|v| v.seconds_median)),
                opt(t.speed_over_python, |x| format!("{x:.2}×")),
                opt(t.seconds_over_dd, |x| format!("{x:.2}×"))
            );
        }
        if let Some(t) = m.traced.iter().find(|t| t.cache == "warm") {
            if let (Some(py), Some(fresh)) =
                (t.python.as_ref().and_then(|v| v.seconds_median), t.fresh_memory.as_ref().and_then(|v| v.seconds_median))
            {
                let goal = super::model::WARM_OVER_PYTHON_GOAL;
                let _ = writeln!(
                    s,
                    "\nWarm: {goal}× Python's speed is a load in {}. {} (a byte written into each page of new memory of the \
                     checkpoint's size; the kernel zeroes and maps every one) took {} of that, before a byte is copied.",
                    secs(Some(py / goal)),
                    t.fresh_memory.as_ref().map_or(String::new(), |v| capitalized(&v.name)),
                    secs(Some(fresh))
                );
            }
        }
    }
    if let Some(v) = &m.python_versions {
        let _ = writeln!(
            s,
            "\nPython {}, numpy {}, safetensors {} (venv `target/bench-venv`).",
            v["python"].as_str().unwrap_or("?"),
            v["numpy"].as_str().unwrap_or("?"),
            v["safetensors"].as_str().unwrap_or("?")
        );
    }
    for k in &m.skipped {
        let _ = writeln!(s, "\nSkipped: {k}.");
    }
    s.push('\n');
}

fn notes(s: &mut String, r: &Results) {
    let _ = writeln!(s, "## Notes\n");
    let mut n = vec![
        "Ratios, not absolute times: these are shared machines. Each tool runs in interleaved rounds (the order rotates) \
         and every figure is a median; the bare row gives the scale."
            .to_string(),
        "Equivalent probes. tracer: every probe group (process, signal, oom, mmap, rss, tcp), attached with `--pid` \
         after the program printed `ready`. bpftrace: the same tracepoints, filtered by pid, printing one line per \
         event to a pipe the benchmark reads (script in the JSON). strace: the same syscalls (`-e trace=...`, signals are always shown), \
         attached with `-p` (ptrace: every syscall of the target stops, traced or not). strace cannot see RSS changes \
         or TCP resets at all."
            .to_string(),
        "tracer aggregates `kmem:rss_stat` in the kernel (an `rss` event when a counter moved by 8 MiB) while the \
         bpftrace script prints every rss_stat, which fires on every page-fault batch: much of bpftrace's extra cost \
         in **mem** is that output. An aggregating bpftrace script would be cheaper, and would lose what the \
         per-event lines give."
            .to_string(),
        "Latency: the tracer releases an event once no record still in the kernel can be older (the newest time \
         read from the ring buffer, less a 5 ms allowance for a program preempted between reserving and stamping), \
         on its 20 ms tick or as soon as 8k events have piled up; records are submitted without waking the reader, \
         which is woken once each time the waiting bytes cross another eighth of the ring. At a steady rate expect about 25 ms. Under a burst it also includes the \
         queue in the ring buffer and the pipe."
            .to_string(),
        "Loss: the stress program makes exactly N one-page mmap/munmap syscalls (raw syscalls, nothing else maps \
         memory before its `_exit`); received counts the one-page mmap/munmap lines, lost sums the `lost` records of \
         the mmap and munmap probes. `other mmap/munmap` must be 0."
            .to_string(),
    ];
    if r.model.is_some() {
        n.push(
            "Model load: `workload serve` loads on its own thread while /health is probed every 20 ms (one fresh \
             connection each, `workload probe`); seconds = `load_seconds` from /models; peak RSS = VmHWM once READY. \
             Python: `safetensors.numpy.load_file` timed inside the interpreter (imports excluded), peak RSS of the \
             process (interpreter included). `--load eager` and `--load background` differ only by the memory-budget \
             check here (no memory limit: both load)."
                .to_string(),
        );
    }
    for k in n {
        let _ = writeln!(s, "- {k}");
    }
}

/// UTC time as `2025-01-31T12:34:56Z` (no date crate for one line).
pub fn utc_now() -> String {
    let ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let (y, m, d, hh, mm, ss) = tracer_event::utc_date_time(ns);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(10_000_000), "10,000,000");
        assert_eq!(count(999), "999");
        assert_eq!(times(Some(1.234)), "1.23×");
        assert_eq!(times(None), "–");
        assert_eq!(secs(Some(0.0123)), "12.3 ms");
        let t = utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}

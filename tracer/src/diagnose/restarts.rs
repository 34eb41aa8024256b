//! Crash loops: a service that dies and is started again, its deaths grouped into one
//! verdict. A service is a chain of `restart` events (`--follow-restarts`: the same
//! program exec'd again, by whoever) or the workers one traced parent forked under the
//! same name (`--follow-children`: a master that respawns them).
use std::collections::{BTreeMap, HashMap};

use super::{fmt::duration, trace::Trace, Cause, Confidence, Link, Verdict};
use crate::event::EventKind;

/// Which service a pid belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Service {
    /// The first pid of a restart chain.
    Restarted(u32),
    /// Workers: (parent pid, comm).
    Workers(u32, String),
}

/// Groups the death verdicts of each service that died at least twice into one
/// `crash_loop` verdict; other verdicts are kept as they are.
pub(crate) fn group(t: &Trace, verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let mut service: HashMap<u32, Service> = HashMap::new();
    let mut restarts: BTreeMap<Service, Vec<usize>> = BTreeMap::new();
    let mut starter: HashMap<Service, (u32, String)> = HashMap::new();
    // A forked child is known by the program it exec'd (a shell's `sleep` is no worker).
    let mut ran: HashMap<u32, &str> = HashMap::new();
    for (_, e) in t.iter() {
        if let EventKind::Exec { .. } = e.kind {
            ran.insert(e.pid, e.comm.as_str());
        }
    }
    for (i, e) in t.iter() {
        match &e.kind {
            EventKind::Restart { old_pid, new_pid, parent_pid, parent_comm, .. } => {
                let s = service.get(old_pid).cloned().unwrap_or(Service::Restarted(*old_pid));
                service.insert(*old_pid, s.clone());
                service.insert(*new_pid, s.clone());
                restarts.entry(s.clone()).or_default().push(i);
                if let (Some(p), Some(c)) = (parent_pid, parent_comm) {
                    starter.insert(s, (*p, c.clone()));
                }
            }
            EventKind::Fork { child_pid, child_comm, thread: false, traced: true, .. } if !service.contains_key(child_pid) => {
                let name = ran.get(child_pid).copied().unwrap_or(child_comm.as_str());
                let s = Service::Workers(e.pid, name.to_string());
                service.insert(*child_pid, s.clone());
                restarts.entry(s.clone()).or_default().push(i);
                starter.insert(s, (e.pid, e.comm.clone()));
            }
            _ => {}
        }
    }
    let is_death = |v: &Verdict| matches!(v.cause, Cause::OomKilled | Cause::KilledBySignal | Cause::Crashed | Cause::Exited);
    let mut groups: BTreeMap<Service, Vec<Verdict>> = BTreeMap::new();
    // Connects refused while a restarted instance was not listening yet belong to the loop.
    let mut refused: BTreeMap<Service, Vec<Verdict>> = BTreeMap::new();
    let mut out = Vec::new();
    for v in verdicts {
        match v.pid.and_then(|p| service.get(&p)) {
            Some(s) if is_death(&v) => groups.entry(s.clone()).or_default().push(v),
            Some(s) if v.cause == Cause::ConnectionRefused => refused.entry(s.clone()).or_default().push(v),
            _ => out.push(v),
        }
    }
    for (s, mut deaths) in groups {
        deaths.sort_by_key(fatal_ns);
        let mut down = refused.remove(&s).unwrap_or_default();
        if deaths.len() < 2 {
            out.extend(deaths);
            out.append(&mut down);
            continue;
        }
        let mut v = crash_loop(t, &deaths, restarts.get(&s).map(Vec::as_slice).unwrap_or(&[]), starter.get(&s));
        for r in &down {
            v.resets += r.resets;
            v.evidence.push(format!("while it was down: {}", r.summary));
        }
        out.push(v);
    }
    out.extend(refused.into_values().flatten());
    out
}

/// When a death happened: its first kill signal, OOM kill or exit (its resets may come
/// later).
fn fatal_ns(v: &Verdict) -> u64 {
    v.chain.iter().filter(|l| FATAL.contains(&l.kind.as_str())).map(|l| l.ts_ns).min().unwrap_or(v.first_ns)
}

const FATAL: [&str; 3] = ["signal", "oom_kill", "exit"];

/// Plain words for what killed each: "OOM-killed", "killed by a signal".
fn cause_words(c: Cause) -> &'static str {
    match c {
        Cause::OomKilled => "OOM-killed",
        Cause::KilledBySignal => "killed by a signal",
        Cause::Crashed => "crashed",
        _ => "exited",
    }
}

fn crash_loop(t: &Trace, deaths: &[Verdict], restarts: &[usize], starter: Option<&(u32, String)>) -> Verdict {
    let first = &deaths[0];
    let last = &deaths[deaths.len() - 1];
    let who = first.pid.map(|p| t.who(p)).unwrap_or_else(|| "the service".into());
    let span = fatal_ns(last).saturating_sub(fatal_ns(first));
    let by = match starter {
        Some((pid, comm)) => format!(" by {comm}[{pid}]"),
        None => String::new(),
    };
    let gaps: Vec<u64> = restarts
        .iter()
        .filter_map(|&i| match &t.ev[i].kind {
            EventKind::Restart { gap_ns, .. } => Some(*gap_ns),
            _ => None,
        })
        .collect();
    let restarted = match (gaps.iter().min(), gaps.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!(", started again{by} {} after each death", duration(*lo)),
        (Some(lo), Some(hi)) => format!(", started again{by} {}–{} after each death", duration(*lo), duration(*hi)),
        _ => format!(", started again{by} each time"),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in deaths {
        *counts.entry(cause_words(d.cause)).or_default() += 1;
    }
    let how = if counts.len() == 1 {
        format!("each time it was {}", counts.keys().next().copied().unwrap_or("exited"))
    } else {
        counts.iter().map(|(w, n)| format!("{n}× {w}")).collect::<Vec<_>>().join(", ")
    };
    // The first death in the first verdict's own words, without its subject.
    let first_words = first.summary.strip_prefix(&who).map(str::trim_start).unwrap_or(&first.summary);
    let summary = format!(
        "{who} died {} times in {}{restarted}; {how} (the first time it {first_words})",
        deaths.len(),
        duration(span)
    );
    let mut chain: Vec<Link> =
        deaths.iter().flat_map(|d| d.chain.iter().filter(|l| FATAL.contains(&l.kind.as_str())).cloned()).collect();
    let first_death = fatal_ns(first);
    for &i in restarts {
        match &t.ev[i].kind {
            EventKind::Restart { old_pid, new_pid, gap_ns, .. } => {
                chain.push(t.link(i, format!("pid {old_pid} started again as pid {new_pid}, {} later", duration(*gap_ns))));
            }
            // A worker forked after the first death: the respawn.
            EventKind::Fork { child_pid, .. } if t.ev[i].ts_ns > first_death => {
                let e = &t.ev[i];
                chain.push(t.link(i, format!("{}[{}] started pid {child_pid} again", e.comm, e.pid)));
            }
            _ => {}
        }
    }
    chain.sort_by_key(|l| l.ts_ns);
    let evidence = deaths.iter().map(|d| format!("death at {}: {}", super::time_of_day(fatal_ns(d)), d.summary)).collect();
    Verdict {
        cause: Cause::CrashLoop,
        summary,
        pid: last.pid,
        comm: last.comm.clone(),
        port: first.port,
        resets: deaths.iter().map(|d| d.resets).sum(),
        first_ns: first.first_ns,
        last_ns: last.last_ns,
        chain,
        evidence,
        confidence: deaths.iter().map(|d| d.confidence).min().unwrap_or(Confidence::Low),
        action: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{
        diagnose,
        testkit::{Tb, PID},
    };

    const SIGKILL: i32 = 9;

    fn restart(b: &mut Tb, ms: u64, old: u32, new: u32) {
        b.push(ms, new, "server", EventKind::Restart {
            old_pid: old,
            new_pid: new,
            gap_ns: 300_000_000,
            argv: vec!["server".into()],
            parent_pid: Some(77),
            parent_comm: Some("supervisor".into()),
        });
    }

    #[test]
    fn deaths_of_one_restarted_service_are_one_verdict() {
        let mut b = Tb::new(PID);
        let pids = [PID, PID + 1, PID + 2];
        for (k, &p) in pids.iter().enumerate() {
            let at = 1_000 * (k as u64 + 1);
            if k > 0 {
                restart(&mut b, at - 700, pids[k - 1], p);
            }
            b.signal(at, 77, "supervisor", p, SIGKILL, "SI_USER");
            b.exit_signal(at + 1, p, SIGKILL);
        }
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].cause, Cause::CrashLoop);
        assert!(
            v[0].summary.starts_with("pid 4711 (workload) died 3 times in 2.0 s, started again by supervisor[77] 300 ms after each death; each time it was killed by a signal"),
            "{}",
            v[0].summary
        );
        assert_eq!(v[0].pid, Some(PID + 2));
        assert_eq!(v[0].evidence.len(), 3);
        let kinds: Vec<&str> = v[0].chain.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["signal", "exit", "restart", "signal", "exit", "restart", "signal", "exit"]);
    }

    #[test]
    fn workers_a_master_respawns_are_one_loop_and_its_other_children_are_not() {
        let mut b = Tb::new(PID);
        let fork = |b: &mut Tb, ms: u64, child: u32| {
            b.push(ms, PID, "workload", EventKind::Fork {
                child_pid: child,
                child_comm: "workload".into(),
                thread: false,
                clone_flags: 0,
                traced: true,
            });
        };
        for (k, w) in [100u32, 101].into_iter().enumerate() {
            let at = 1_000 * (k as u64 + 1);
            fork(&mut b, at - 500, w);
            b.push(at - 499, w, "python3", EventKind::Exec { filename: "/bin/python3".into(), old_pid: w, argv: None, argv_cut: false });
            b.signal(at, 0, "", w, SIGKILL, "SI_KERNEL");
            b.exit_signal(at + 1, w, SIGKILL);
        }
        // A helper the master forks that runs something else and is killed too.
        fork(&mut b, 2_500, 200);
        b.push(2_501, 200, "sleep", EventKind::Exec { filename: "/bin/sleep".into(), old_pid: 200, argv: None, argv_cut: false });
        b.signal(2_600, 9, "kill", 200, SIGKILL, "SI_USER");
        b.exit_signal(2_601, 200, SIGKILL);
        let v = diagnose(&b.ev);
        let causes: Vec<&str> = v.iter().map(|v| v.cause.as_str()).collect();
        assert_eq!(causes.iter().filter(|c| **c == "crash_loop").count(), 1, "{causes:?}");
        assert!(causes.contains(&"killed_by_signal"), "the helper stays on its own: {causes:?}");
        let l = v.iter().find(|v| v.cause == Cause::CrashLoop).unwrap();
        assert!(l.summary.contains("started again by workload[4711] each time"), "{}", l.summary);
        assert!(l.chain.iter().any(|c| c.what == "workload[4711] started pid 101 again"), "{:?}", l.chain);
    }

    #[test]
    fn a_loop_of_oom_kills_says_what_the_first_one_needed() {
        let mut b = Tb::new(PID);
        let pids = [PID, PID + 1];
        for (k, &p) in pids.iter().enumerate() {
            let at = 2_000 * (k as u64 + 1);
            if k > 0 {
                restart(&mut b, at - 1_500, pids[k - 1], p);
            }
            b.mmap_file(at - 1_000, p, 1 << 30, "/models/aya/model.safetensors");
            b.cgroup_sample(at - 100, (1 << 30) - (1 << 20), Some(1 << 30), Some(k as u64));
            b.oom_kill(at, p, "workload", p, "workload", 1000 * 1024, 1024);
            b.exit_signal(at + 1, p, SIGKILL);
        }
        let v = diagnose(&b.ev);
        let l = v.iter().find(|v| v.cause == Cause::CrashLoop).unwrap_or_else(|| panic!("{v:#?}"));
        let a = l.action.as_deref().unwrap_or_default();
        assert!(a.starts_with("stop the cause and the loop stops: the files it mapped (model.safetensors) total 1.00 GiB"), "{a}");
        assert!(a.contains("raise the memory limit above 1.00 GiB") && a.contains(&format!("--pid {PID} ")), "{a}");
    }

    #[test]
    fn one_death_stays_its_own_verdict() {
        let mut b = Tb::new(PID);
        b.signal(1_000, 77, "supervisor", PID, SIGKILL, "SI_USER");
        b.exit_signal(1_001, PID, SIGKILL);
        restart(&mut b, 1_300, PID, PID + 1);
        let v = diagnose(&b.ev);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].cause, Cause::KilledBySignal);
    }
}

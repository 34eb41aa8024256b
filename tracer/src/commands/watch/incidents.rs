//! `--incident-dir`: each verdict leaves a folder with the events around it (JSON lines
//! that `tracer report` reads), the report in markdown, a Perfetto file and the verdict
//! itself, so that a crash at 3 a.m. is on disk in the morning. The folders are bounded
//! in count and in bytes: the oldest go first.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::records::{Line, VerdictLine};
use crate::{
    diagnose::{self, Verdict},
    event::{Event, EventKind},
    export::{perfetto, report},
    process::identity::Identity,
};

#[derive(Clone, Debug)]
pub struct IncidentOptions {
    pub dir: PathBuf,
    pub max_count: usize,
    pub max_bytes: u64,
    /// How far before the first event of a verdict its folder's events begin.
    pub before_ns: u64,
    /// When the agent began watching: a folder's trace never claims to start before it.
    pub since_ns: u64,
}

pub struct Incidents {
    opts: IncidentOptions,
}

impl Incidents {
    /// Creates the folder if needed; fails now (not at the first incident) when it
    /// cannot be written.
    pub fn open(opts: IncidentOptions) -> anyhow::Result<Incidents> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| {
            anyhow::anyhow!("cannot create the incident folder {}: {e}: give a writable one with --incident-dir", opts.dir.display())
        })?;
        let probe = opts.dir.join(".tracer-write-check");
        std::fs::write(&probe, b"").map_err(|e| {
            anyhow::anyhow!("cannot write in the incident folder {}: {e}: give a writable one with --incident-dir", opts.dir.display())
        })?;
        let _ = std::fs::remove_file(&probe);
        Ok(Incidents { opts })
    }

    /// When the agent's probes were attached: nothing before it was watched.
    pub fn watching_since(&mut self, ns: u64) {
        self.opts.since_ns = ns;
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Writes the folder of one verdict from the window (events in time order, each with
    /// the service it is about, resolved when it came in: the process may be gone since)
    /// and prunes old folders. Returns the folder.
    pub fn write(
        &self,
        verdict: &Verdict,
        who: Option<&Identity>,
        window: &[Event],
        services: &[Option<Arc<Identity>>],
        now_ns: u64,
    ) -> std::io::Result<PathBuf> {
        let dir = self.unique_dir(verdict);
        std::fs::create_dir_all(&dir)?;
        let from = verdict.first_ns.saturating_sub(self.opts.before_ns);
        let skip = window.partition_point(|e| e.ts_ns < from);
        let slice = &window[skip..];
        let slice_services = services.get(skip..).unwrap_or(&[]);
        // What was watched: from `before_ns` ahead of the verdict, or the agent's start if
        // later; never after the first event kept.
        let watched_from = from.max(self.opts.since_ns);
        let start = Event {
            ts_ns: slice.first().map_or(watched_from, |e| e.ts_ns.min(watched_from)),
            pid: verdict.pid.unwrap_or(0),
            tid: verdict.pid.unwrap_or(0),
            comm: verdict.comm.clone().unwrap_or_default(),
            kind: EventKind::TraceStart {
                target_pid: verdict.pid.unwrap_or(0),
                target_cmdline: format!("tracer watch incident: {}", verdict.summary),
                follow_children: false,
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
                probes: Vec::new(),
                missing_probes: Vec::new(),
                rss_threshold_bytes: 0,
            },
        };
        let end = Event {
            ts_ns: now_ns.max(slice.last().map_or(0, |e| e.ts_ns)),
            pid: verdict.pid.unwrap_or(0),
            tid: verdict.pid.unwrap_or(0),
            comm: String::new(),
            kind: EventKind::TraceEnd { reason: "incident".into(), events: slice.len() as u64, lost: 0, other_resets: Default::default(), cut: None },
        };
        let mut events: Vec<Event> = Vec::with_capacity(slice.len() + 2);
        events.push(start.clone());
        events.extend(slice.iter().cloned());
        events.push(end.clone());

        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl"))?);
        serde_json::to_writer(&mut out, &Line { event: &start, service: who })?;
        out.write_all(b"\n")?;
        for (k, e) in slice.iter().enumerate() {
            let service = slice_services.get(k).and_then(|s| s.as_deref());
            serde_json::to_writer(&mut out, &Line { event: e, service })?;
            out.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut out, &end)?;
        out.write_all(b"\n")?;
        out.flush()?;

        let line = VerdictLine { ts_ns: now_ns, kind: "verdict", verdict, service: who, incident: Some(dir.display().to_string()) };
        std::fs::write(dir.join("verdict.json"), serde_json::to_vec_pretty(&line)?)?;

        // The report is the one `tracer report` gives on events.jsonl.
        let verdicts = diagnose::diagnose(&events);
        if let Err(e) = perfetto::write(&dir.join("trace.perfetto.json"), &events, &verdicts, None) {
            tracing::warn!("incident {}: no Perfetto file: {e}", dir.display());
        }
        let report = report::Report::build(&events, verdicts, Vec::new(), Some(dir.join("events.jsonl").display().to_string()));
        std::fs::write(dir.join("report.md"), report::render_markdown(&report))?;
        self.prune(&dir);
        Ok(dir)
    }

    /// `YYYYMMDDTHHMMSSZ-CAUSE-COMM-PID`, with `-2`... when taken.
    fn unique_dir(&self, v: &Verdict) -> PathBuf {
        let comm: String = v
            .comm
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .take(24)
            .collect();
        let pid = v.pid.map(|p| p.to_string()).unwrap_or_else(|| "host".into());
        let stem = format!("{}-{}-{comm}-{pid}", crate::units::utc_stamp(v.first_ns), v.cause.as_str());
        let mut dir = self.opts.dir.join(&stem);
        let mut n = 2;
        while dir.exists() {
            dir = self.opts.dir.join(format!("{stem}-{n}"));
            n += 1;
        }
        dir
    }

    /// Removes the oldest folders (by name: they begin with the time) until at most
    /// `max_count` remain and they take at most `max_bytes`; `keep` is never removed.
    fn prune(&self, keep: &Path) {
        let mut folders: Vec<(PathBuf, u64)> = match std::fs::read_dir(&self.opts.dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && is_incident_name(p))
                .map(|p| {
                    let size = folder_bytes(&p);
                    (p, size)
                })
                .collect(),
            Err(_) => return,
        };
        folders.sort();
        let mut total: u64 = folders.iter().map(|(_, s)| s).sum();
        let mut count = folders.len();
        for (path, size) in folders {
            if count <= self.opts.max_count && total <= self.opts.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!("removed incident {} (keeping {} at most, {} in all)", path.display(), self.opts.max_count, crate::units::format_bytes(self.opts.max_bytes));
                    count -= 1;
                    total = total.saturating_sub(size);
                }
                Err(e) => tracing::warn!("cannot remove old incident {}: {e}", path.display()),
            }
        }
    }
}

/// Only folders this agent names are ever removed: `YYYYMMDDTHHMMSSZ-...`.
fn is_incident_name(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    let b = name.as_bytes();
    b.len() > 17 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T' && b[9..15].iter().all(u8::is_ascii_digit) && b[15] == b'Z' && b[16] == b'-'
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Cause, Confidence};

    fn verdict(first_ns: u64, pid: u32) -> Verdict {
        Verdict {
            cause: Cause::KilledBySignal,
            summary: "srv was killed".into(),
            pid: Some(pid),
            comm: Some("srv/worker 1".into()),
            port: None,
            resets: 0,
            first_ns,
            last_ns: first_ns,
            chain: Vec::new(),
            evidence: Vec::new(),
            confidence: Confidence::High,
            action: None,
        }
    }

    fn exit(ts_ns: u64, pid: u32) -> (Event, Option<Arc<Identity>>) {
        (
            Event {
                ts_ns,
                pid,
                tid: pid,
                comm: "srv".into(),
                kind: EventKind::Exit {
                    group_dead: true,
                    exit_code: None,
                    signal: Some(9),
                    signal_name: Some("SIGKILL".into()),
                    core_dumped: false,
                    source: "task_exit_code".into(),
                },
            },
            Some(Arc::new(crate::process::identity::parse("/system.slice/srv.service"))),
        )
    }

    fn split(w: Vec<(Event, Option<Arc<Identity>>)>) -> (Vec<Event>, Vec<Option<Arc<Identity>>>) {
        w.into_iter().unzip()
    }

    #[test]
    fn a_folder_holds_the_window_a_report_and_the_verdict_and_old_ones_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        // A folder the agent did not write is never touched.
        std::fs::create_dir(tmp.path().join("notes")).unwrap();
        let base = 1_796_578_501_000_000_000u64;
        let inc = Incidents::open(IncidentOptions { dir: tmp.path().into(), max_count: 2, max_bytes: 1 << 30, before_ns: 10_000_000_000, since_ns: base - 5_000_000_000 })
            .unwrap();
        let (window, services) = split(vec![exit(base - 20_000_000_000, 40), exit(base, 41)]);
        let dir = inc.write(&verdict(base, 41), None, &window, &services, base + 1).unwrap();
        assert_eq!(dir.file_name().unwrap().to_str().unwrap(), "20261206T173501Z-killed_by_signal-srv_worker_1-41");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // trace_start, the one exit inside the window (not the one 20 s before), trace_end.
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["kind"], "trace_start");
        assert_eq!(lines[0]["target_pid"], 41);
        // The agent started 5 s before the verdict: the folder's trace starts there, not
        // at the 10 s it would otherwise cover.
        assert_eq!(lines[0]["ts_ns"], base - 5_000_000_000);
        assert_eq!(lines[1]["pid"], 41);
        assert_eq!(lines[1]["service"]["unit"], "srv.service");
        assert_eq!(lines[2]["kind"], "trace_end");
        let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(report.contains("SIGKILL"), "{report}");
        assert!(dir.join("trace.perfetto.json").is_file());
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("verdict.json")).unwrap()).unwrap();
        assert_eq!(v["cause"], "killed_by_signal");
        assert_eq!(v["kind"], "verdict");

        let second = inc.write(&verdict(base + 60_000_000_000, 42), None, &window, &services, base + 2).unwrap();
        let third = inc.write(&verdict(base + 120_000_000_000, 43), None, &window, &services, base + 3).unwrap();
        assert!(!dir.exists(), "the oldest incident goes past max_count");
        assert!(second.exists() && third.exists());
        assert!(tmp.path().join("notes").exists());
    }

    #[test]
    fn the_byte_bound_removes_old_folders_but_never_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let inc = Incidents::open(IncidentOptions { dir: tmp.path().into(), max_count: 100, max_bytes: 1, before_ns: 0, since_ns: 0 }).unwrap();
        let base = 1_796_578_501_000_000_000u64;
        let (window, services) = split(vec![exit(base, 1)]);
        let a = inc.write(&verdict(base, 1), None, &window, &services, base).unwrap();
        let b = inc.write(&verdict(base + 1_000_000_000, 2), None, &window, &services, base).unwrap();
        assert!(!a.exists());
        assert!(b.exists(), "the folder just written stays even over the bound");
    }

    #[test]
    fn an_unwritable_folder_is_refused_at_start_with_the_option_to_change() {
        let e = Incidents::open(IncidentOptions { dir: "/proc/no/such".into(), max_count: 1, max_bytes: 1, before_ns: 0, since_ns: 0 }).err().unwrap();
        assert!(e.to_string().contains("--incident-dir"), "{e}");
    }
}

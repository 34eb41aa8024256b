//! What the agent says about one event or verdict, in each output's words: the process
//! an event is about (for its service), the metrics it counts, the OTLP log record of a
//! fatal event or a verdict, and the JSON line with the service next to the event.
use serde::Serialize;

use super::metrics::Metrics;
use crate::{
    diagnose::Verdict,
    event::{Event, EventKind},
    export::otlp::{AttrValue, LogRecord, Severity},
    process::identity::Identity,
};

/// The process an event is about: the victim of an OOM kill, the receiver of a signal,
/// the owner of a reset (none when no process owns it: the task current in softirq is
/// unrelated), else the event's process.
pub fn subject_pid(ev: &Event) -> Option<u32> {
    match &ev.kind {
        EventKind::OomKill { victim_pid, .. } => *victim_pid,
        EventKind::Signal { target_pid, .. } => Some(*target_pid),
        EventKind::TcpReset { attributed_by: None, .. } => None,
        _ if ev.pid == 0 => None,
        _ => Some(ev.pid),
    }
}

/// Who sent a signal: the kernel (the OOM killer, a fault), the process itself, or
/// another process.
pub fn sender_kind(ev: &Event) -> &'static str {
    match &ev.kind {
        EventKind::Signal { si_code_name, .. } if si_code_name == "SI_KERNEL" => "kernel",
        EventKind::Signal { target_pid, .. } if *target_pid == ev.pid => "self",
        EventKind::Signal { .. } => "process",
        _ => "",
    }
}

/// Counts an event in the metrics; `who` is the identity of [`subject_pid`].
pub fn count(metrics: &Metrics, ev: &Event, who: Option<&Identity>) {
    match &ev.kind {
        EventKind::OomKill { .. } => metrics.oom_kill(who),
        EventKind::Signal { signal, signal_name, .. } if tracer_common::ends_from_outside(*signal) => {
            metrics.fatal_signal(who, signal_name, sender_kind(ev))
        }
        EventKind::Exit { group_dead: true, signal: Some(_), signal_name, .. } => {
            metrics.exit_by_signal(who, signal_name.as_deref().unwrap_or("unknown"))
        }
        EventKind::TcpReset { direction, reason, .. } => {
            let reason = reason.as_deref().filter(|r| !r.is_empty()).unwrap_or("unknown");
            metrics.tcp_reset(who, reason, &crate::export::report::label(direction))
        }
        EventKind::Lost { probe, count, .. } => metrics.lost(probe, *count),
        EventKind::Sample { cgroup: Some(cg), .. } => metrics.memcg(who, cg.usage_bytes, cg.limit_bytes, cg.oom_kills),
        // Each GPU its own series: "GPU 0 (NVIDIA H100 …)".
        EventKind::Forecast(f) => {
            let limit = if f.limit == "gpu" { &f.limit_name } else { &f.limit };
            metrics.forecast(who, limit, f.seconds_to_limit, f.headroom_bytes)
        }
        _ => {}
    }
}

/// The resets no traced process owns, counted in the kernel per reason: `(key, total)` as
/// [`crate::capture::Capture::other_resets`] gives them, turned into the metric's
/// reason and direction. `last` holds the totals already counted.
pub fn count_other_resets(metrics: &Metrics, totals: &std::collections::BTreeMap<String, u64>, last: &mut std::collections::BTreeMap<String, u64>) {
    for (key, &total) in totals {
        let before = last.insert(key.clone(), total).unwrap_or(0);
        if total <= before {
            continue;
        }
        let (reason, direction) = match key.as_str() {
            "received" => ("unknown", "received"),
            "no reason" => ("unknown", "sent"),
            r => (r, "sent"),
        };
        metrics.tcp_resets_by(None, reason, direction, total - before);
    }
}

fn identity_attributes(who: Option<&Identity>, out: &mut Vec<(String, AttrValue)>) {
    let Some(i) = who else { return };
    out.push(("tracer.service".into(), AttrValue::Str(i.service())));
    out.push(("tracer.cgroup".into(), AttrValue::Str(i.cgroup.clone())));
    if let Some(id) = i.cgroup_id {
        out.push(("tracer.cgroup_id".into(), AttrValue::Int(id as i64)));
    }
    out.push(("container.runtime".into(), AttrValue::Str(i.runtime.as_str().into())));
    if let Some(c) = &i.container_id {
        out.push(("container.id".into(), AttrValue::Str(c.clone())));
    }
    if let Some(p) = &i.pod_uid {
        out.push(("k8s.pod.uid".into(), AttrValue::Str(p.clone())));
    }
    if let Some(u) = &i.unit {
        out.push(("tracer.systemd_unit".into(), AttrValue::Str(u.clone())));
    }
}

/// The OTLP record of a fatal event (an OOM kill, a fatal signal, an end by a signal);
/// None for the rest, which only metrics count.
pub fn event_record(ev: &Event, who: Option<&Identity>) -> Option<LogRecord> {
    let (severity, body, pid, comm) = match &ev.kind {
        EventKind::OomKill { victim_pid, victim_comm, anon_rss_kb, .. } => {
            let rss = anon_rss_kb.map(|kb| format!(" with {} anonymous memory", crate::units::format_bytes(kb * 1024))).unwrap_or_default();
            let pid = victim_pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
            (Severity::Error, format!("OOM killer chose {victim_comm}[{pid}]{rss}"), victim_pid.map(i64::from), victim_comm.clone())
        }
        EventKind::Signal { signal, signal_name, target_pid, target_comm, .. } if tracer_common::ends_from_outside(*signal) => {
            let from = match sender_kind(ev) {
                "kernel" => "the kernel".to_string(),
                "self" => "itself".to_string(),
                _ => format!("{}[{}]", ev.comm, ev.pid),
            };
            (Severity::Warn, format!("{signal_name} sent to {target_comm}[{target_pid}] by {from}"), Some(i64::from(*target_pid)), target_comm.clone())
        }
        EventKind::Exit { group_dead: true, signal: Some(_), signal_name, core_dumped, .. } => {
            let core = if *core_dumped { " (core dumped)" } else { "" };
            let name = signal_name.as_deref().unwrap_or("a signal");
            (Severity::Error, format!("{}[{}] ended by {name}{core}", ev.comm, ev.pid), Some(i64::from(ev.pid)), ev.comm.clone())
        }
        EventKind::Forecast(f) => {
            let body = format!(
                "{} will be reached in ~{:.1} s at {}/s ({} left; {} confidence)",
                f.limit_name,
                f.seconds_to_limit,
                crate::units::format_bytes(f.rate_bytes_per_s.max(0.0) as u64),
                crate::units::format_bytes(f.headroom_bytes),
                f.confidence
            );
            (Severity::Warn, body, Some(i64::from(ev.pid)), ev.comm.clone())
        }
        _ => return None,
    };
    let mut attributes = vec![("tracer.event".to_string(), AttrValue::Str(ev.kind_name().to_string()))];
    if let Some(pid) = pid {
        attributes.push(("process.pid".into(), AttrValue::Int(pid)));
    }
    if !comm.is_empty() {
        attributes.push(("process.command".into(), AttrValue::Str(comm)));
    }
    identity_attributes(who, &mut attributes);
    Some(LogRecord { ts_ns: ev.ts_ns, severity, body, attributes })
}

/// The OTLP record of a verdict: its summary as the body; what to do, the cause and the
/// incident folder as attributes.
pub fn verdict_record(v: &Verdict, who: Option<&Identity>, incident: Option<&std::path::Path>) -> LogRecord {
    let mut attributes = vec![
        ("tracer.event".to_string(), AttrValue::Str("verdict".into())),
        ("tracer.cause".to_string(), AttrValue::Str(v.cause.as_str().into())),
        ("tracer.confidence".to_string(), AttrValue::Str(crate::export::report::label(&v.confidence))),
    ];
    if let Some(pid) = v.pid {
        attributes.push(("process.pid".into(), AttrValue::Int(i64::from(pid))));
    }
    if let Some(comm) = &v.comm {
        attributes.push(("process.command".into(), AttrValue::Str(comm.clone())));
    }
    if let Some(port) = v.port {
        attributes.push(("tracer.port".into(), AttrValue::Int(i64::from(port))));
    }
    if v.resets > 0 {
        attributes.push(("tracer.resets".into(), AttrValue::Int(v.resets.min(i64::MAX as u64) as i64)));
    }
    if let Some(a) = &v.action {
        attributes.push(("tracer.action".into(), AttrValue::Str(a.clone())));
    }
    if let Some(dir) = incident {
        attributes.push(("tracer.incident".into(), AttrValue::Str(dir.display().to_string())));
    }
    identity_attributes(who, &mut attributes);
    let severity = match v.cause {
        crate::diagnose::Cause::OomKilled | crate::diagnose::Cause::Crashed | crate::diagnose::Cause::CrashLoop => Severity::Fatal,
        _ => Severity::Error,
    };
    LogRecord { ts_ns: v.last_ns.max(v.first_ns), severity, body: v.summary.clone(), attributes }
}

/// A line of `--jsonl DIR`: the event as a trace writes it, with the service it is about.
#[derive(Serialize)]
pub struct Line<'a> {
    #[serde(flatten)]
    pub event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a Identity>,
}

/// A verdict line of `--jsonl DIR` and an incident's `verdict.json`: the verdict line of
/// a trace (`kind: verdict`, the verdict's fields), with its service and folder.
#[derive(Serialize)]
pub struct VerdictLine<'a> {
    pub ts_ns: u64,
    pub kind: &'static str,
    #[serde(flatten)]
    pub verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a Identity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::identity;

    fn oom() -> Event {
        Event {
            ts_ns: 5,
            pid: 100,
            tid: 100,
            comm: "alloc".into(),
            kind: EventKind::OomKill {
                victim_pid: Some(4711),
                victim_tid: 4711,
                victim_comm: "server".into(),
                is_target: false,
                total_vm_kb: None,
                anon_rss_kb: Some(262144),
                file_rss_kb: None,
                shmem_rss_kb: None,
                pgtables_kb: None,
                uid: None,
                oom_score_adj: None,
            },
        }
    }

    #[test]
    fn an_oom_kill_is_about_its_victim_and_its_record_names_the_pod() {
        let ev = oom();
        assert_eq!(subject_pid(&ev), Some(4711));
        let id = identity::parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8b5e9d0e_1c4a_4b8e_9d7e_0a1b2c3d4e5f.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope");
        let rec = event_record(&ev, Some(&id)).expect("a record");
        assert_eq!(rec.severity, Severity::Error);
        assert_eq!(rec.body, "OOM killer chose server[4711] with 256 MiB anonymous memory");
        let attr = |k: &str| rec.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert!(matches!(attr("process.pid"), Some(AttrValue::Int(4711))));
        assert!(matches!(attr("k8s.pod.uid"), Some(AttrValue::Str(s)) if s == "8b5e9d0e-1c4a-4b8e-9d7e-0a1b2c3d4e5f"));
        assert!(matches!(attr("container.id"), Some(AttrValue::Str(s)) if s.starts_with("0123456789abcdef")));
    }

    #[test]
    fn an_unowned_reset_is_about_no_process() {
        let ev = Event {
            ts_ns: 1,
            pid: 55,
            tid: 55,
            comm: "ksoftirqd/0".into(),
            kind: EventKind::TcpReset {
                direction: crate::event::Direction::Sent,
                state: None,
                reason: Some("NO_SOCKET".into()),
                saddr: "127.0.0.1:1".into(),
                daddr: "127.0.0.1:2".into(),
                skaddr: 0,
                attributed_by: None,
                context_pid: 55,
                context_comm: "ksoftirqd/0".into(),
            },
        };
        assert_eq!(subject_pid(&ev), None);
        assert!(event_record(&ev, None).is_none(), "resets are counted, not logged one by one");
        let m = Metrics::new();
        count(&m, &ev, None);
        assert!(m.render().contains("reason=\"NO_SOCKET\",direction=\"sent\"} 1"), "{}", m.render());
    }

    #[test]
    fn resets_counted_in_the_kernel_add_their_increase_once() {
        let m = Metrics::new();
        let mut last = std::collections::BTreeMap::new();
        let mut totals: std::collections::BTreeMap<String, u64> =
            [("NOT_SPECIFIED".to_string(), 3), ("received".to_string(), 2)].into_iter().collect();
        count_other_resets(&m, &totals, &mut last);
        totals.insert("NOT_SPECIFIED".into(), 5);
        count_other_resets(&m, &totals, &mut last);
        let text = m.render();
        assert!(text.contains("reason=\"NOT_SPECIFIED\",direction=\"sent\"} 5"), "{text}");
        assert!(text.contains("reason=\"unknown\",direction=\"received\"} 2"), "{text}");
    }

    #[test]
    fn the_json_line_is_the_event_with_its_service() {
        let ev = oom();
        let id = identity::parse("/system.slice/model-server.service");
        let line = serde_json::to_value(Line { event: &ev, service: Some(&id) }).unwrap();
        assert_eq!(line["kind"], "oom_kill");
        assert_eq!(line["victim_pid"], 4711);
        assert_eq!(line["service"]["unit"], "model-server.service");
        // `tracer report` reads such a line as the plain event.
        let back: Event = serde_json::from_value(line).unwrap();
        assert_eq!(back.kind_name(), "oom_kill");
    }
}

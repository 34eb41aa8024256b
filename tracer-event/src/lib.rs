//! THE event model. Everything downstream of capture (diagnosis, exports, the TUI, the
//! `report` command on a recorded trace) speaks only this. One JSON object per line; the
//! field names are a stable interface documented in the README. This crate knows nothing
//! of eBPF or of how events are captured.
use serde::{Deserialize, Serialize};

/// Whether an `rss` member counts swap (MM_SWAPENTS) rather than resident memory.
pub fn is_swap_member(member: &str) -> bool {
    member.contains("SWAP")
}

/// An exec's arguments as one line, as /proc's cmdline is shown: `…` where the kernel
/// cut them.
pub fn argv_line(argv: &[String], cut: bool) -> String {
    let line = argv.join(" ");
    if cut { format!("{line} …") } else { line }
}

/// A file as the kernel knew it at a syscall: which one (device and inode), and how big.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// `MAJOR:MINOR` of the filesystem's device, as in /proc/PID/maps.
    pub dev: String,
    pub ino: u64,
    /// The file's size in bytes at the syscall.
    pub size: u64,
    /// The path is missing its top components (deeper than what is kept) or a
    /// component is cut; `path` then starts with `…/` or holds a `…`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_cut: bool,
}

/// A kernel address as JSON: a hex string (`"0xffff8f1c2a3b4c00"`), which JavaScript and
/// jq 1.6 keep exact, where a number above 2^53 loses its last digits. A number is read
/// too (traces written before).
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => {
                let digits = t.strip_prefix("0x").unwrap_or(&t);
                u64::from_str_radix(digits, 16).map_err(|e| serde::de::Error::custom(format!("address {t:?}: {e}")))
            }
        }
    }
}

/// One thing that happened, with the process context it happened in. In JSON, `ts_ns`
/// (exact, for tools that read 64-bit integers) is followed by `ts_us`, the same time in
/// microseconds, which a double (JavaScript, jq 1.6) holds exactly.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Process (TGID) the event is about: the traced process for its own events, the
    /// owner for an attributed reset, the current task otherwise.
    pub pid: u32,
    /// Thread the event happened on (the current thread when the tracepoint fired).
    pub tid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            ts_ns: u64,
            ts_us: u64,
            pid: u32,
            tid: u32,
            comm: &'a str,
            #[serde(flatten)]
            kind: &'a EventKind,
        }
        Line { ts_ns: self.ts_ns, ts_us: self.ts_ns / 1000, pid: self.pid, tid: self.tid, comm: &self.comm, kind: &self.kind }
            .serialize(s)
    }
}

/// What happened. Serialized with a `kind` tag in snake_case next to the common fields.
///
/// The variants are the one list of event kinds: their names ([`Event::kind_name`],
/// [`KIND_NAMES`]) derive from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
// Consumers keep a default arm, so that a new kind of event touches only its producer.
#[non_exhaustive]
pub enum EventKind {
    /// First line of every trace: what is traced and with which probes.
    TraceStart {
        target_pid: u32,
        target_cmdline: String,
        follow_children: bool,
        kernel: String,
        probes: Vec<String>,
        /// Probes that could not be attached on this kernel, with the reason.
        missing_probes: Vec<String>,
        rss_threshold_bytes: u64,
    },
    /// Last line of every trace.
    TraceEnd {
        /// `target_exited`, `duration`, `interrupted`, `output_closed`, `write_failed`,
        /// `no_restart` (`--follow-restarts` waited in vain).
        reason: String,
        events: u64,
        lost: u64,
        /// Resets elsewhere on the host (no traced socket, port or peer in them): counted
        /// per reason (`received` for ones received), not written.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        other_resets: std::collections::BTreeMap<String, u64>,
        /// `--max-size`: the part of the trace left out to keep the file under the size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cut: Option<TraceCut>,
    },
    /// A traced process created a thread or a process.
    Fork {
        child_pid: u32,
        child_comm: String,
        thread: bool,
        clone_flags: u64,
        /// Whether the child is traced too (always for threads; with --follow-children
        /// for processes).
        traced: bool,
    },
    Exec {
        filename: String,
        old_pid: u32,
        /// The new program's arguments, read from its memory at exec (absent when the
        /// kernel's layout is unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        argv: Option<Vec<String>>,
        /// The arguments were longer than what is kept: the last ones are missing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        argv_cut: bool,
    },
    /// A traced process connected to a server on this host: who owns the far end (read
    /// from /proc at the connect, while it listens), so that its OOM kill explains the
    /// resets the client gets. `pid` is the client.
    Peer {
        /// The server's address as the client sees it.
        remote: String,
        owner_pid: u32,
        owner_comm: String,
    },
    /// `--follow-restarts`: the traced process ended and this one (`pid`) exec'd the same
    /// program with the same arguments; it is traced from here on.
    Restart {
        old_pid: u32,
        new_pid: u32,
        /// From the end of the old process to the exec of the new one.
        gap_ns: u64,
        argv: Vec<String>,
        /// Who started the new process, when it could be read.
        parent_pid: Option<u32>,
        parent_comm: Option<String>,
    },
    /// A thread of a traced process exited; `group_dead` marks the end of the process.
    Exit {
        group_dead: bool,
        /// exit(2) status when the process exited on its own.
        exit_code: Option<i32>,
        /// The signal that killed it, when it was killed.
        signal: Option<i32>,
        signal_name: Option<String>,
        core_dumped: bool,
        /// Where exit_code/signal came from: `task_exit_code` (task_struct via BTF),
        /// `fatal_signal` (the last fatal signal delivered), or `unknown`.
        source: String,
    },
    /// A signal was generated for a thread of a traced process. pid/tid/comm are the
    /// sender's.
    Signal {
        target_pid: u32,
        target_tid: u32,
        target_comm: String,
        signal: i32,
        signal_name: String,
        si_code: i32,
        si_code_name: String,
        /// TRACE_SIGNAL_* result: delivered, ignored, already_pending, overflow_fail,
        /// lose_info.
        result: String,
        group: bool,
        /// The receiver is not traced: it is the server a traced client talked to (see
        /// `peer`), and this is a fatal signal sent to it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        peer: bool,
        /// Who started the sender, nearest first ("bash[812] < sshd[640] < systemd[1]"),
        /// read from /proc when a fatal signal was seen (absent when the sender had gone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender_parents: Option<String>,
    },
    /// A signal was delivered to (dequeued by) a traced thread.
    SignalDeliver {
        signal: i32,
        signal_name: String,
        si_code: i32,
        si_code_name: String,
        sa_handler: u64,
        sa_flags: u64,
    },
    /// The OOM killer chose a victim (any process on the machine). pid/tid/comm are the
    /// task that ran the OOM killer.
    OomKill {
        victim_pid: Option<u32>,
        victim_tid: u32,
        victim_comm: String,
        /// The victim is a traced process.
        is_target: bool,
        total_vm_kb: Option<u64>,
        anon_rss_kb: Option<u64>,
        file_rss_kb: Option<u64>,
        shmem_rss_kb: Option<u64>,
        pgtables_kb: Option<u64>,
        uid: Option<u32>,
        oom_score_adj: Option<i16>,
    },
    Mmap {
        addr: u64,
        len: u64,
        prot: String,
        flags: String,
        fd: i64,
        offset: u64,
        result: u64,
        error: Option<String>,
        /// Backing file of a file mapping: named in the kernel at the syscall (see
        /// `file`), or from /proc afterwards on a kernel without BTF.
        path: Option<String>,
        duration_ns: u64,
        /// The file behind `fd`, read in the kernel at the syscall.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<FileId>,
    },
    Munmap {
        addr: u64,
        len: u64,
        error: Option<String>,
        duration_ns: u64,
    },
    Brk {
        requested: u64,
        result: u64,
        duration_ns: u64,
    },
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: String,
        result: u64,
        error: Option<String>,
        duration_ns: u64,
    },
    /// Resident memory of one kind moved past the threshold since the last record.
    Rss {
        /// MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES (names from the kernel).
        member: String,
        bytes: i64,
    },
    /// A TCP reset sent or received on this machine, attributed to a traced process
    /// (pid) when the socket, the connection or the listening port was its.
    TcpReset {
        direction: Direction,
        state: Option<String>,
        reason: Option<String>,
        saddr: String,
        daddr: String,
        #[serde(with = "hex_u64")]
        skaddr: u64,
        /// How the reset was tied to the process: `socket`, `connection`,
        /// `listen_port`, or null when it was not.
        attributed_by: Option<String>,
        /// The task that was current when the reset fired (often unrelated in softirq).
        context_pid: u32,
        context_comm: String,
    },
    /// A TCP socket of a traced process changed state.
    TcpState {
        old_state: String,
        new_state: String,
        saddr: String,
        daddr: String,
        #[serde(with = "hex_u64")]
        skaddr: u64,
    },
    /// Periodic context from user space (procfs, the memory cgroup, GPUs, the system),
    /// every `--sample-interval`. pid is the target.
    Sample {
        /// Each traced process still alive.
        processes: Vec<ProcessSample>,
        /// The memory cgroup of the target, when it has one with a controller.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup: Option<CgroupSample>,
        /// One per NVIDIA GPU NVML sees; empty without a driver.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gpus: Vec<GpuSample>,
        system: SystemSample,
    },
    /// Events the kernel could not hand over because the ring buffer was full.
    Lost {
        /// Probe that lost them.
        probe: String,
        count: u64,
        total: u64,
    },
    /// A memory limit is about to be reached: its headroom, how fast memory grows, and
    /// when it will be reached at that rate (see `tracer::forecast`). pid and comm: the
    /// traced process growing fastest (the target when none grows).
    Forecast(Forecast),
    /// The kernel woke the tracer: tasks waited for memory at least `stall_us` within
    /// `window_us` (a PSI trigger on the memory cgroup's `memory.pressure`, or on
    /// /proc/pressure/memory for the whole host). Reclaim and refaults stall tasks before
    /// an OOM kill, so this comes first. pid is the target. At most one per window.
    MemoryStall {
        /// `memory_cgroup` or `host`.
        scope: String,
        /// The cgroup folder, or "host".
        name: String,
        /// `some`: at least one task waited.
        stalled: String,
        stall_us: u64,
        window_us: u64,
        /// The kernel's running total of `some` stall time there, microseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_us: Option<u64>,
    },
    /// Memory calls of one process counted instead of written one per line, from
    /// `from_ns` to this event's time: successful anonymous mmap, munmap and mremap calls
    /// smaller than `below_bytes`, and brk calls (`--mappings summary`; the in-memory
    /// timeline also counts this way past its limit). Mappings of files and failed calls
    /// are always written one per line.
    MemorySummary {
        from_ns: u64,
        mmaps: u64,
        mmap_bytes: u64,
        munmaps: u64,
        munmap_bytes: u64,
        mremaps: u64,
        brks: u64,
        /// The largest single anonymous mmap among them.
        largest_mmap_bytes: u64,
        /// Calls this size or larger were written one per line (u64::MAX: none were).
        below_bytes: u64,
    },
}

/// Events a size-bounded trace left out: everything from `from_ns` to `to_ns` (the
/// first line, `trace_start`, is always kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCut {
    pub events: u64,
    pub from_ns: u64,
    pub to_ns: u64,
    /// Bytes of the file they took (compressed, when the trace is).
    pub bytes: u64,
}

/// One process as procfs saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    pub pid: u32,
    pub comm: String,
    /// procfs state letter: R, S, D, Z...
    pub state: String,
    pub rss_bytes: u64,
    pub vm_size_bytes: u64,
    /// Peak resident set (VmHWM).
    pub vm_hwm_bytes: u64,
    pub threads: u64,
    /// Open file descriptors, when /proc/PID/fd was readable.
    pub fds: Option<u64>,
    /// Its address-space limit (RLIMIT_AS, soft) when it has one: an allocation past it
    /// fails with ENOMEM, and nothing is OOM-killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space_limit_bytes: Option<u64>,
}

/// The memory cgroup of the target (v1 or v2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupSample {
    /// Folder in the cgroup filesystem.
    pub path: String,
    pub version: u8,
    pub usage_bytes: u64,
    /// None when unlimited.
    pub limit_bytes: Option<u64>,
    /// memory.max_usage_in_bytes (v1) or memory.peak (v2), when the kernel has it.
    pub peak_bytes: Option<u64>,
    /// OOM kills in this cgroup so far (v1 memory.oom_control, v2 memory.events).
    pub oom_kills: Option<u64>,
    /// The processes of the cgroup (and below) with the most resident memory, traced or
    /// not, largest first (at most 8): who else grew toward the limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRss>,
    /// What the kernel says about the cgroup nearing its limit, where it says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<CgroupPressure>,
}

/// A memory limit about to be reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// `memory_cgroup`, `host` or `gpu`.
    pub limit: String,
    /// The cgroup folder, host memory, the GPU.
    pub limit_name: String,
    pub limit_bytes: u64,
    /// In use now (a cgroup's usage less its inactive page cache).
    pub used_bytes: u64,
    pub headroom_bytes: u64,
    pub headroom_percent: f64,
    /// Growth, the least-squares slope over the window.
    pub rate_bytes_per_s: f64,
    /// Headroom over rate: when the limit is reached if the growth goes on.
    pub seconds_to_limit: f64,
    /// The basis: the stretch of time and the number of points the rate is taken from.
    pub window_ms: u64,
    pub points: u32,
    /// How well a straight line fits the points (1: exactly).
    pub r_squared: f64,
    /// `high`: steady growth seen for a second or more; `low`: a short or uneven run of
    /// growth (a load's step, a spike) that may stop short of the limit.
    pub confidence: String,
    /// The growth of the process named by the event, over the same window.
    pub fastest_rate_bytes_per_s: Option<f64>,
    /// The kernel's own signs at the last sample, where it gives them: the share of the
    /// last 10 s tasks waited for memory (PSI `some avg10`: the cgroup's on v2, the host's
    /// otherwise) and the times a memory cgroup hit its limit so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_some_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_hits: Option<u64>,
}

/// The kernel's own signs of a memory cgroup near its limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupPressure {
    /// Page cache on the inactive list (memory.stat: v1 `total_inactive_file`, v2
    /// `inactive_file`): counted in the usage, dropped by the kernel before it OOM-kills.
    pub inactive_file_bytes: Option<u64>,
    /// Times the usage hit the limit (v1 `memory.failcnt`; v2 `max` in memory.events).
    pub limit_hits: Option<u64>,
    /// v2 memory.pressure `some avg10`: the share of the last 10 s some task of the cgroup
    /// waited for memory (percent).
    pub psi_some_avg10: Option<f64>,
}

/// A process of the memory cgroup and its resident memory, from /proc/PID/statm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRss {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
}

/// One GPU as NVML saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// Memory the traced processes hold on this GPU, when NVML reports it.
    pub process_bytes: Option<u64>,
}

/// Machine-wide memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemSample {
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    /// /proc/pressure/memory `some avg10`, where the kernel has PSI.
    pub psi_memory_some_avg10: Option<f64>,
    pub psi_memory_full_avg10: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Sent,
    Received,
}

/// The UTC calendar date and time of a wall-clock timestamp (`ts_ns`): year, month, day,
/// hour, minute, second (Howard Hinnant's days-to-civil; no date crate for this).
pub fn utc_date_time(ts_ns: u64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = ts_ns / 1_000_000_000;
    let (days, day) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32, (day / 3600) as u32, (day / 60 % 60) as u32, (day % 60) as u32)
}

impl Event {
    /// The snake_case `kind` tag of this event.
    pub fn kind_name(&self) -> &'static str {
        (&self.kind).into()
    }
}

/// Every `kind` tag, in declaration order.
pub const KIND_NAMES: &[&str] = <EventKind as strum::VariantNames>::VARIANTS;

/// Kinds the tracer writes itself (the frame of a trace, user-space samples, loss
/// reports, the restarts and peers it found, PSI's wake-ups); every other kind comes
/// from a kernel tracepoint.
pub const BOOKKEEPING_KINDS: &[&str] =
    &["trace_start", "trace_end", "sample", "lost", "restart", "peer", "memory_summary", "forecast", "memory_stall"];

/// Kinds that come from a kernel tracepoint.
pub fn kernel_kind_names() -> impl Iterator<Item = &'static str> {
    KIND_NAMES.iter().copied().filter(|k| !BOOKKEEPING_KINDS.contains(k))
}

/// Hand-built events for other crates' tests (the `testkit` feature, enabled only by
/// their dev-dependencies).
#[cfg(feature = "testkit")]
pub mod testkit {
    use crate::EventKind;

    /// An OOM kill of a traced `victim` (its thread id the same, 0 when unknown) with none
    /// of the victim's memory figures: for tests where only the kill's time matters.
    pub fn oom_kill_kind(victim: Option<u32>, comm: &str) -> EventKind {
        EventKind::OomKill {
            victim_pid: victim,
            victim_tid: victim.unwrap_or(0),
            victim_comm: comm.into(),
            is_target: true,
            total_vm_kb: None,
            anon_rss_kb: None,
            file_rss_kb: None,
            shmem_rss_kb: None,
            pgtables_kb: None,
            uid: None,
            oom_score_adj: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_flat_kind_tag_and_round_trips() {
        let ev = Event {
            ts_ns: 1_700_000_000_000_000_000,
            pid: 42,
            tid: 43,
            comm: "workload".into(),
            kind: EventKind::Rss { member: "MM_ANONPAGES".into(), bytes: 1 << 30 },
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.contains(r#""kind":"rss""#), "{line}");
        assert!(line.contains(r#""member":"MM_ANONPAGES""#), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.kind_name(), "rss");
    }

    #[test]
    fn kind_names_are_the_serde_tags() {
        let end = EventKind::TraceEnd { reason: "duration".into(), events: 0, lost: 0, other_resets: Default::default(), cut: None };
        let ev = Event { ts_ns: 1, pid: 1, tid: 1, comm: String::new(), kind: end };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], ev.kind_name());
        assert_eq!(KIND_NAMES.len(), 22);
        assert!(BOOKKEEPING_KINDS.contains(&"forecast"), "a forecast is the tracer's, not a tracepoint's");
        assert!(KIND_NAMES.contains(&"tcp_reset") && KIND_NAMES.contains(&"signal_deliver"), "{KIND_NAMES:?}");
        for k in BOOKKEEPING_KINDS {
            assert!(KIND_NAMES.contains(k), "{k}");
        }
        assert_eq!(kernel_kind_names().count(), KIND_NAMES.len() - BOOKKEEPING_KINDS.len());
        assert!(kernel_kind_names().any(|k| k == "oom_kill"));
    }

    #[test]
    fn big_numbers_survive_a_double() {
        let ev = Event {
            ts_ns: 1_796_544_302_226_587_913,
            pid: 42,
            tid: 42,
            comm: "python3".into(),
            kind: EventKind::TcpState {
                old_state: "TCP_SYN_SENT".into(),
                new_state: "TCP_ESTABLISHED".into(),
                saddr: "127.0.0.1:40000".into(),
                daddr: "127.0.0.1:8000".into(),
                skaddr: 0xffff_8f1c_2a3b_4c00,
            },
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.contains(r#""skaddr":"0xffff8f1c2a3b4c00""#), "{line}");
        // What a double-based reader (JavaScript, jq 1.6) gets back is the exact time in µs.
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let us = v["ts_us"].as_u64().unwrap();
        assert_eq!(us, 1_796_544_302_226_587);
        assert_eq!(us as f64 as u64, us, "µs since the epoch fit a double's 53 bits");
        assert_ne!(ev.ts_ns as f64 as u64, ev.ts_ns, "ns do not: that is why ts_us is there");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
        // A trace written before, with the address as a number, still reads.
        let old = line.replace(r#""0xffff8f1c2a3b4c00""#, &0xffff_8f1c_2a3b_4c00u64.to_string());
        assert_eq!(serde_json::from_str::<Event>(&old).unwrap(), ev);
    }
}

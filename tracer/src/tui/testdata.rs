//! Recorded traces built by hand for the TUI's tests. Times are milliseconds after the
//! trace start.
use crate::diagnose::{Cause, Confidence, Link, Verdict};
use crate::event::{CgroupSample, Direction, Event, EventKind, GpuSample, ProcessSample, SystemSample};

pub const PID: u32 = 4711;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// 2023-11-14T22:13:20Z
pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn ts(ms: u64) -> u64 {
    T0 + ms * 1_000_000
}

pub struct Rec {
    pub ev: Vec<Event>,
}

impl Rec {
    pub fn new() -> Rec {
        let mut r = Rec { ev: Vec::new() };
        r.push(
            0,
            PID,
            EventKind::TraceStart {
                target_pid: PID,
                target_cmdline: "workload serve --port 8000 --load eager".into(),
                follow_children: false,
                kernel: "6.18.0".into(),
                probes: vec!["process".into(), "signal".into(), "oom".into(), "mmap".into(), "rss".into(), "tcp".into()],
                missing_probes: vec![],
                rss_threshold_bytes: 8 * MIB,
            },
        );
        r
    }

    pub fn push(&mut self, ms: u64, pid: u32, kind: EventKind) {
        let comm = if pid == PID { "workload".to_string() } else { format!("proc{pid}") };
        self.ev.push(Event { ts_ns: ts(ms), pid, tid: pid, comm, kind });
    }

    pub fn sample(&mut self, ms: u64, rss: u64, usage: u64, limit: Option<u64>, gpu: Option<u64>) {
        self.push(
            ms,
            PID,
            EventKind::Sample {
                processes: vec![ProcessSample {
                    pid: PID,
                    comm: "workload".into(),
                    state: "R".into(),
                    rss_bytes: rss,
                    vm_size_bytes: rss.saturating_mul(4),
                    vm_hwm_bytes: rss,
                    threads: 8,
                    fds: Some(20),
                    address_space_limit_bytes: None,
                }],
                cgroup: Some(CgroupSample {
                    path: "/sys/fs/cgroup/workload".into(),
                    version: 2,
                    usage_bytes: usage,
                    limit_bytes: limit,
                    peak_bytes: Some(usage),
                    oom_kills: Some(0),
                    members: Vec::new(), pressure: None,
                }),
                gpus: gpu
                    .map(|used| {
                        vec![GpuSample {
                            index: 0,
                            name: "NVIDIA H200".into(),
                            used_bytes: used,
                            total_bytes: 140 * GIB,
                            process_bytes: Some(used),
                        }]
                    })
                    .unwrap_or_default(),
                system: SystemSample {
                    mem_total_bytes: 64 * GIB,
                    mem_available_bytes: 40 * GIB,
                    psi_memory_some_avg10: None,
                    psi_memory_full_avg10: None,
                },
            },
        );
    }

    pub fn rss(&mut self, ms: u64, member: &str, bytes: u64) {
        self.push(ms, PID, EventKind::Rss { member: member.into(), bytes: bytes as i64 });
    }

    pub fn rst(&mut self, ms: u64, reason: &str, daddr: &str) {
        self.push(
            ms,
            PID,
            EventKind::TcpReset {
                direction: Direction::Sent,
                state: Some("TCP_ESTABLISHED".into()),
                reason: Some(reason.into()),
                saddr: "127.0.0.1:8000".into(),
                daddr: daddr.into(),
                skaddr: 0xffff_8880_0000_1000,
                attributed_by: Some("socket".into()),
                context_pid: PID,
                context_comm: "workload".into(),
            },
        );
    }

    /// The bug report in small: memory climbs to the memcg limit while a model maps, the
    /// kernel SIGKILLs and OOM-kills the workload, two connections are reset, and the
    /// ring buffer lost 3 rss records on the way.
    pub fn oom_scenario() -> Rec {
        let mut r = Rec::new();
        r.push(
            5,
            PID,
            EventKind::TcpState {
                old_state: "TCP_CLOSE".into(),
                new_state: "TCP_LISTEN".into(),
                saddr: "0.0.0.0:8000".into(),
                daddr: "0.0.0.0:0".into(),
                skaddr: 0xffff_8880_0000_0100,
            },
        );
        r.push(
            10,
            PID,
            EventKind::Fork { child_pid: 4712, child_comm: "tokio-rt".into(), thread: true, clone_flags: 0x3d0f00, traced: true },
        );
        r.sample(100, 300 * MIB, 310 * MIB, Some(2 * GIB), Some(GIB));
        r.push(
            1_000,
            PID,
            EventKind::Mmap {
                addr: 0,
                len: 1200 * MIB,
                prot: "r--".into(),
                flags: "PRIVATE".into(),
                fd: 5,
                offset: 0,
                result: 0x7f00_0000_0000,
                error: None,
                path: Some("/models/aya/model-00001.safetensors".into()),
                duration_ns: 1000, file: None,
            },
        );
        r.rss(1_000, "MM_ANONPAGES", 200 * MIB);
        r.rss(1_000, "MM_FILEPAGES", 100 * MIB);
        r.sample(2_000, 900 * MIB, 950 * MIB, Some(2 * GIB), Some(3 * GIB));
        r.rss(3_000, "MM_ANONPAGES", 1000 * MIB);
        r.push(3_500, PID, EventKind::Lost { probe: "rss".into(), count: 3, total: 3 });
        r.sample(4_000, 1500 * MIB, 1600 * MIB, Some(2 * GIB), Some(3 * GIB));
        r.rss(5_900, "MM_ANONPAGES", 1900 * MIB);
        r.sample(5_950, 2000 * MIB, 2 * GIB - 10 * MIB, Some(2 * GIB), Some(3 * GIB));
        r.push(
            6_000,
            4800,
            EventKind::Signal {
                target_pid: PID,
                target_tid: PID,
                target_comm: "workload".into(),
                signal: 9,
                signal_name: "SIGKILL".into(),
                si_code: 128,
                si_code_name: "SI_KERNEL".into(),
                result: "delivered".into(),
                group: true,
                peer: false,
                sender_parents: None,
            },
        );
        r.push(
            6_000,
            4800,
            EventKind::OomKill {
                victim_pid: Some(PID),
                victim_tid: PID,
                victim_comm: "workload".into(),
                is_target: true,
                total_vm_kb: Some(8 << 20),
                anon_rss_kb: Some(1900 * 1024),
                file_rss_kb: Some(12 * 1024),
                shmem_rss_kb: Some(0),
                pgtables_kb: Some(4096),
                uid: Some(1000),
                oom_score_adj: Some(0),
            },
        );
        r.push(
            6_020,
            PID,
            EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: Some(9),
                signal_name: Some("SIGKILL".into()),
                core_dumped: false,
                source: "fatal_signal".into(),
            },
        );
        r.rst(6_021, "TCP_ABORT_ON_CLOSE", "127.0.0.1:51234");
        r.rst(6_022, "TCP_ABORT_ON_CLOSE", "127.0.0.1:51235");
        r.sample(6_050, 0, 10 * MIB, Some(2 * GIB), Some(0));
        r.push(8_000, PID, EventKind::TraceEnd { reason: "target_exited".into(), events: 19, lost: 3, other_resets: Default::default(), cut: None });
        r
    }
}

pub const SUMMARY: &str = "pid 4711 (workload) was OOM-killed at the memory cgroup limit (2.00 GiB) after mapping 1.17 GiB \
                           of 1 file (model-00001.safetensors) while anonymous memory grew by 1.66 GiB; \
                           2 connections on :8000 were reset as it died";

/// The verdict the diagnosis gives for [`Rec::oom_scenario`], built by hand.
pub fn oom_verdict() -> Verdict {
    Verdict {
        cause: Cause::OomKilled,
        summary: SUMMARY.into(),
        pid: Some(PID),
        comm: Some("workload".into()),
        port: Some(8000),
        resets: 2,
        first_ns: ts(6_021),
        last_ns: ts(6_022),
        chain: vec![
            Link { index: 12, ts_ns: ts(6_000), kind: "oom_kill".into(), what: "OOM killer chose workload[4711]".into() },
            Link { index: 13, ts_ns: ts(6_020), kind: "exit".into(), what: "workload[4711] died of SIGKILL".into() },
        ],
        evidence: vec!["memory cgroup limit 2.00 GiB reached".into()],
        confidence: Confidence::High,
        action: None,
    }
}

pub fn unexplained_verdict(n: u64) -> Verdict {
    Verdict {
        cause: Cause::Unexplained,
        summary: format!("reset number {n} has no explanation in the trace"),
        pid: Some(PID),
        comm: Some("workload".into()),
        port: Some(8000),
        resets: 1,
        first_ns: ts(n),
        last_ns: ts(n),
        chain: vec![],
        evidence: vec![],
        confidence: Confidence::Low,
        action: None,
    }
}

/// `app` drawn on a `w`x`h` test terminal.
pub fn render(app: &crate::tui::App, w: u16, h: u16) -> ratatui::buffer::Buffer {
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).expect("a test terminal");
    t.draw(|f| crate::tui::ui::draw(f, app)).expect("drawing on a test terminal");
    t.backend().buffer().clone()
}

/// The screen as text, one line per row.
pub fn screen(buf: &ratatui::buffer::Buffer) -> String {
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

/// Where `needle` starts on the screen (single-width text only).
pub fn find(buf: &ratatui::buffer::Buffer, needle: &str) -> Option<(u16, u16)> {
    let text = screen(buf);
    text.lines().enumerate().find_map(|(y, line)| {
        let cells: Vec<char> = line.chars().collect();
        let n: Vec<char> = needle.chars().collect();
        cells.windows(n.len()).position(|w| w == n.as_slice()).map(|x| (x as u16, y as u16))
    })
}

/// The app after the whole OOM scenario and its verdict.
pub fn oom_app() -> crate::tui::App {
    let mut app = crate::tui::App::new(crate::tui::Limits::default());
    app.tick(ts(0));
    for e in &Rec::oom_scenario().ev {
        app.on_event(e);
    }
    app.tick(ts(8_000));
    app.set_verdicts(vec![oom_verdict()]);
    app
}

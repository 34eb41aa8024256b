//! Kernel -> [`Event`]: load and attach the programs, keep the in-kernel target filter
//! current, drain the ring buffer, decode records, account for loss.
pub mod btf;
pub mod decode;
pub mod format;
pub mod layouts;
pub mod privileges;
pub mod sockets;
pub mod target;
pub mod tracefs;

use std::{collections::BTreeSet, path::PathBuf};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tracer_common::{Probe, PROBE_COUNT};

use self::{decode::Decoder, layouts::Layouts, tracefs::Tracefs};
use crate::event::{Event, EventKind};

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(
        "tracer needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load eBPF programs: \
         run it with sudo, or grant them with `sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_resource+ep $(command -v tracer)`"
    )]
    NotPrivileged,
    #[error("no process with pid {0}: check it with `ps -p {0}` (or start the program with `tracer run -- CMD`)")]
    NoSuchProcess(u32),
    #[error("process {0} exited while tracer was attaching; nothing left to trace (use `tracer run -- CMD` to trace a short-lived program from its start)")]
    ExitedDuringAttach(u32),
    #[error("tracefs is not mounted and could not be mounted: run `sudo mount -t tracefs nodev /sys/kernel/tracing`")]
    NoTracefs,
    #[error("tracepoint {tracepoint} is not available on this kernel: {source}")]
    TracepointMissing { tracepoint: String, source: std::io::Error },
    #[error("cannot parse tracepoint format {}: {source}", path.display())]
    BadFormat { path: PathBuf, source: format::FormatError },
    #[error("the kernel refused the eBPF programs: {0:#}{hint}", hint = memlock_hint(.0))]
    Load(#[source] aya::EbpfError),
    #[error("none of the selected probes could be attached on this kernel: {0}")]
    NothingAttached(String),
    #[error("kernel map {0} is missing from the eBPF object (build problem: rebuild with `cargo build --release`)")]
    MissingMap(&'static str),
    #[error("cannot update kernel map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("no command given: usage `tracer run -- CMD [ARGS...]`")]
    EmptyCommand,
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("reading the ring buffer: {0}")]
    Poll(std::io::Error),
}

fn memlock_hint(e: &aya::EbpfError) -> &'static str {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        "; on kernels before 5.11 raise the locked-memory limit (`ulimit -l unlimited`) and run as root"
    } else {
        ""
    }
}

/// Groups of probes a user can select with `--probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum ProbeGroup {
    /// task_newtask, sched_process_exec, sched_process_exit (always on: they track the target)
    Process,
    /// signal_generate, signal_deliver
    Signal,
    /// oom:mark_victim
    Oom,
    /// mmap, munmap, brk, mremap syscalls
    Mmap,
    /// kmem:rss_stat, aggregated in the kernel (the most expensive probe)
    Rss,
    /// tcp_send_reset, tcp_receive_reset, inet_sock_set_state
    Tcp,
}

impl ProbeGroup {
    pub const ALL: [ProbeGroup; 6] =
        [ProbeGroup::Process, ProbeGroup::Signal, ProbeGroup::Oom, ProbeGroup::Mmap, ProbeGroup::Rss, ProbeGroup::Tcp];
}

/// (program name in the object, tracepoint category, tracepoint name, group)
const PROGRAMS: &[(&str, &str, &str, ProbeGroup)] = &[
    ("task_newtask", "task", "task_newtask", ProbeGroup::Process),
    ("sched_process_exec", "sched", "sched_process_exec", ProbeGroup::Process),
    ("sched_process_exit", "sched", "sched_process_exit", ProbeGroup::Process),
    ("signal_generate", "signal", "signal_generate", ProbeGroup::Signal),
    ("signal_deliver", "signal", "signal_deliver", ProbeGroup::Signal),
    ("mark_victim", "oom", "mark_victim", ProbeGroup::Oom),
    ("rss_stat", "kmem", "rss_stat", ProbeGroup::Rss),
    ("tcp_send_reset", "tcp", "tcp_send_reset", ProbeGroup::Tcp),
    ("tcp_receive_reset", "tcp", "tcp_receive_reset", ProbeGroup::Tcp),
    ("inet_sock_set_state", "sock", "inet_sock_set_state", ProbeGroup::Tcp),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap", ProbeGroup::Mmap),
    ("sys_exit_mmap", "syscalls", "sys_exit_mmap", ProbeGroup::Mmap),
    ("sys_enter_munmap", "syscalls", "sys_enter_munmap", ProbeGroup::Mmap),
    ("sys_exit_munmap", "syscalls", "sys_exit_munmap", ProbeGroup::Mmap),
    ("sys_enter_brk", "syscalls", "sys_enter_brk", ProbeGroup::Mmap),
    ("sys_exit_brk", "syscalls", "sys_exit_brk", ProbeGroup::Mmap),
    ("sys_enter_mremap", "syscalls", "sys_enter_mremap", ProbeGroup::Mmap),
    ("sys_exit_mremap", "syscalls", "sys_exit_mremap", ProbeGroup::Mmap),
];

/// Every tracepoint tracer attaches, as `(category, name, group)`: what `tracer doctor`
/// checks the running kernel for.
pub fn tracepoints() -> impl Iterator<Item = (&'static str, &'static str, ProbeGroup)> {
    PROGRAMS.iter().map(|&(_, category, name, group)| (category, name, group))
}

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub follow_children: bool,
    pub rss_threshold_bytes: u64,
    pub probes: BTreeSet<ProbeGroup>,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
}

pub struct Capture {
    // Dropping `ebpf` detaches everything; the logger must outlive program load.
    _ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ring: RingBuf<MapData>,
    tgids: BpfHashMap<MapData, u32, u8>,
    tids: BpfHashMap<MapData, u32, u32>,
    listen_ports: BpfHashMap<MapData, u16, u32>,
    lost: PerCpuArray<MapData, u64>,
    lost_seen: [u64; PROBE_COUNT as usize],
    pub decoder: Decoder,
    pub attached: Vec<String>,
    pub missing: Vec<String>,
    pub rss_threshold_bytes: u64,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

impl Capture {
    /// Checks privileges and tracefs, reads the layouts, loads and attaches the programs.
    /// Nothing is traced until [`Capture::add_process`].
    pub fn load(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if !privileges::can_load_tracing_programs(privileges::effective_caps()) {
            return Err(CaptureError::NotPrivileged);
        }
        if !privileges::raise_memlock_limit() {
            tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
        }
        let tracefs = Tracefs::locate_or_mount()?;
        let layouts = Layouts::read(&tracefs);
        let exit_code_offset = btf::task_exit_code_offset();
        if exit_code_offset.is_none() {
            tracing::warn!("no BTF for task_struct.exit_code: exit causes come from the last fatal signal");
        }
        let config = layouts.kernel_config(opts.rss_threshold_bytes, opts.follow_children, exit_code_offset);
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };

        let mut attached = Vec::new();
        let mut missing = Vec::new();
        for &(prog, category, name, group) in PROGRAMS {
            if group != ProbeGroup::Process && !opts.probes.contains(&group) {
                continue;
            }
            let label = format!("{category}:{name}");
            if !tracefs.exists(category, name) {
                tracing::warn!("tracepoint {label} is not available on this kernel; going on without it");
                missing.push(format!("{label} (not on this kernel)"));
                continue;
            }
            match attach(&mut ebpf, prog, category, name) {
                Ok(()) => attached.push(label),
                Err(why) => {
                    tracing::warn!("cannot attach {label}: {why}; going on without it");
                    missing.push(format!("{label} ({why})"));
                }
            }
        }
        if !attached.iter().any(|p| p.ends_with("sched_process_exit")) {
            return Err(CaptureError::NothingAttached(missing.join(", ")));
        }

        let ring = take(&mut ebpf, "EVENTS")?;
        let tgids = take(&mut ebpf, "TGIDS")?;
        let tids = take(&mut ebpf, "TIDS")?;
        let lost = take(&mut ebpf, "LOST")?;
        let listen_ports = take(&mut ebpf, "LISTEN_PORTS")?;
        Ok(Capture {
            _ebpf: ebpf,
            logger,
            ring,
            tgids,
            tids,
            listen_ports,
            lost,
            lost_seen: [0; PROBE_COUNT as usize],
            decoder: Decoder::new(layouts, decode::Clock::now(), opts.follow_children),
            attached,
            missing,
            rss_threshold_bytes: opts.rss_threshold_bytes,
        })
    }

    /// Adds a thread group to the in-kernel filter, TGID first so that threads created
    /// while we list the existing ones are caught by task_newtask.
    pub fn add_process(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.tgids.insert(pid, 1, 0).map_err(|source| CaptureError::Map { map: "TGIDS", source })?;
        self.tids.insert(pid, pid, 0).map_err(|source| CaptureError::Map { map: "TIDS", source })?;
        for tid in target::threads(pid) {
            self.tids.insert(tid, pid, 0).map_err(|source| CaptureError::Map { map: "TIDS", source })?;
        }
        let sockets = target::tcp_sockets(pid);
        for s in sockets.iter().filter(|s| s.listening) {
            self.listen_ports
                .insert(s.local.port(), pid, 0)
                .map_err(|source| CaptureError::Map { map: "LISTEN_PORTS", source })?;
        }
        self.decoder.seed_sockets(pid, &sockets);
        Ok(())
    }

    pub fn ring_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.ring.as_fd()
    }

    /// Decodes everything waiting in the ring buffer.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        while let Some(item) = self.ring.next() {
            if let Some(ev) = self.decoder.decode(&item) {
                out.push(ev);
            }
        }
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    /// `Lost` events for every probe whose failed-reservation counter moved.
    pub fn poll_lost(&mut self, now_wall_ns: u64, out: &mut Vec<Event>) {
        for probe in Probe::ALL {
            let total: u64 = match self.lost.get(&(probe as u32), 0) {
                Ok(per_cpu) => per_cpu.iter().sum(),
                Err(_) => continue,
            };
            let seen = &mut self.lost_seen[probe as usize];
            if total > *seen {
                out.push(Event {
                    ts_ns: now_wall_ns,
                    pid: 0,
                    tid: 0,
                    comm: String::new(),
                    kind: EventKind::Lost { probe: probe_label(probe).into(), count: total - *seen, total },
                });
                *seen = total;
            }
        }
    }

    pub fn lost_total(&self) -> u64 {
        self.lost_seen.iter().sum()
    }
}

pub fn probe_label(p: Probe) -> &'static str {
    match p {
        Probe::TaskNewtask => "task_newtask",
        Probe::ProcessExec => "sched_process_exec",
        Probe::ProcessExit => "sched_process_exit",
        Probe::SignalGenerate => "signal_generate",
        Probe::SignalDeliver => "signal_deliver",
        Probe::MarkVictim => "mark_victim",
        Probe::RssStat => "rss_stat",
        Probe::TcpSendReset => "tcp_send_reset",
        Probe::TcpReceiveReset => "tcp_receive_reset",
        Probe::InetSockSetState => "inet_sock_set_state",
        Probe::Mmap => "mmap",
        Probe::Munmap => "munmap",
        Probe::Brk => "brk",
        Probe::Mremap => "mremap",
    }
}

fn attach(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<(), String> {
    let program: &mut TracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load().map_err(|e| format!("{e:#}"))?;
    program.attach(category, name).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::MissingMap(name))?;
    T::try_from(map).map_err(|source| CaptureError::Map { map: name, source })
}

//! Kernel -> [`Event`]: load and attach the programs, keep the in-kernel target filter
//! current, drain the ring buffer, decode records, order them, attribute resets to their
//! owners, account for loss. What leaves here ([`Capture::poll`], [`Capture::finish`]) is
//! finished: in time order, attributed, with `lost` events where the kernel dropped
//! records. Nothing downstream sees a raw record or the decoder.
pub mod btf;
pub mod decode;
pub mod format;
pub mod layouts;
pub mod probes;
pub mod privileges;
pub mod sockets;
pub mod tracefs;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tracer_common::{Probe, PROBE_COUNT};

pub use self::probes::ProbeGroup;
use self::{decode::Decoder, layouts::Layouts, tracefs::Tracefs};
use crate::event::{Event, EventKind};

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(
        "loading eBPF programs needs root, or the CAP_BPF and CAP_PERFMON capabilities: \
         run it with sudo, or grant them with `sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace,cap_sys_resource+ep $(command -v tracer)`"
    )]
    NotPrivileged,
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

/// Every tracepoint tracer attaches, as `(category, name, group)`: what `tracer doctor`
/// checks the running kernel for.
pub fn tracepoints() -> impl Iterator<Item = (&'static str, &'static str, ProbeGroup)> {
    probes::programs().map(|(p, group)| (p.category, p.tracepoint, group))
}

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub follow_children: bool,
    pub rss_threshold_bytes: u64,
    pub probes: BTreeSet<ProbeGroup>,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// When the process given to [`Capture::watch_restarts`] ends, the kernel traces the
    /// first process that execs its arguments (see [`Capture::take_successors`]).
    pub follow_restarts: bool,
    /// `--cgroup`: tasks moved into this cgroup (or below) are traced from that moment
    /// (see [`Capture::take_joined`]).
    pub scope: Option<crate::process::scope::Hierarchy>,
    /// `tracer watch`: the rare events of every process on the host (fatal signals, ends
    /// by a signal, OOM kills), not only the traced processes'. Resets nobody traced owns
    /// stay counted in the kernel, per reason ([`Capture::other_resets`]).
    pub host_wide: bool,
    /// Tracepoints left unattached even though their group is on (by name, e.g.
    /// `signal_deliver`): the agent without a scope has no traced process whose
    /// deliveries matter, and each costs every process on the host.
    pub without: Vec<&'static str>,
}

/// What feeds the rss probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssHook {
    /// The BTF tracepoint (`tp_btf/rss_stat`): the program reads the mm's counters
    /// itself, with no record built for each of the millions of page faults.
    Btf,
    /// The classic tracepoint (`kmem:rss_stat`) and the record the kernel fills.
    Classic,
}

/// `TRACER_RSS_HOOK=classic` keeps the rss probe on the classic tracepoint.
pub const RSS_HOOK_ENV: &str = "TRACER_RSS_HOOK";

impl RssHook {
    /// The hook to try first: the BTF tracepoint where this kernel's BTF says where the
    /// counters are, unless [`RSS_HOOK_ENV`] asks for the classic one.
    pub fn wanted(layout: &tracer_common::RssCounterLayout) -> RssHook {
        let asked = std::env::var(RSS_HOOK_ENV).ok();
        match asked.as_deref() {
            Some("classic") => return RssHook::Classic,
            None | Some("" | "btf" | "auto") => {}
            Some(other) => tracing::warn!("{RSS_HOOK_ENV}={other} is neither `classic` nor `btf`; choosing as if unset"),
        }
        if layout.is_complete() { RssHook::Btf } else { RssHook::Classic }
    }
}

/// The BTF tracepoint program for `tracepoint`'s probe, where there is one.
const BTF_PROGRAMS: &[(&str, &str)] = &[("rss_stat", "rss_stat_btf")];

/// How far a record's time may trail its place in the ring buffer. The ring is read in
/// reservation order (a reserved record not yet committed stops the reader), and a
/// program reads the time just after it reserved: so once a read has emptied the ring,
/// every record stamped more than this before the read began is in hand. Programs run
/// for microseconds; this leaves room for a preempted one.
pub const RING_SKEW: Duration = Duration::from_millis(5);

/// Records taken from the ring buffer in one read: in a burst the ring refills as fast as
/// it is read, and decoded events take several times the room of a record; the rest
/// waits in the ring (see [`Capture::receive`]).
pub const READ_CHUNK: usize = 4096;

/// Loading parses the kernel's BTF and the programs' ELF: megabytes freed at once but kept
/// by the allocator, which a tracer left attached for days should give back.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain libc call, no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What one [`Capture::poll`] released.
#[derive(Debug, Default)]
pub struct Released {
    /// In time order.
    pub events: Vec<Event>,
    /// Every event released later is newer than this (wall-clock ns).
    pub until_ns: u64,
}

pub struct Capture {
    // Dropping `ebpf` detaches everything; the logger must outlive program load.
    _ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ring: RingBuf<MapData>,
    tgids: BpfHashMap<MapData, u32, u8>,
    tids: BpfHashMap<MapData, u32, u32>,
    listen_ports: BpfHashMap<MapData, u16, u32>,
    peers: BpfHashMap<MapData, u32, u8>,
    lost: PerCpuArray<MapData, u64>,
    other_resets_kernel: PerCpuArray<MapData, u64>,
    /// Resets that reached user space but that no traced process owns, per reason.
    other_resets_seen: std::collections::BTreeMap<String, u64>,
    restart_watch: Array<MapData, tracer_common::RestartWatch>,
    /// Successors the kernel adopted since the last [`Capture::take_successors`].
    successors: Vec<u32>,
    /// The process whose successor the restart watch looks for (moved on to each
    /// successor, as the kernel's watch is).
    restart_of: Option<u32>,
    /// Tasks the kernel took in as they moved into the `--cgroup` scope.
    joined: Vec<u32>,
    /// Traced tasks that moved to another cgroup since the last [`Capture::take_moved`].
    moved: Vec<u32>,
    /// Owners of local listeners traced clients connected to, by port (None: nobody on
    /// this host), looked up once per port.
    peer_owners: std::collections::HashMap<u16, Option<(u32, String)>>,
    lost_seen: [u64; PROBE_COUNT as usize],
    decoder: Decoder,
    /// Decoded events not released yet: the reorder window.
    window: Vec<Event>,
    /// Every record stamped before this (wall ns, the records' time base) has been read.
    complete_ns: u64,
    pub attached: Vec<String>,
    pub missing: Vec<String>,
    /// When the programs were attached (wall ns): the trace's start, before any
    /// process was added.
    pub attached_at_ns: u64,
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
        let mut config = layouts.kernel_config(opts.rss_threshold_bytes, opts.follow_children, exit_code_offset);
        let structs = btf::running_kernel_structs();
        config.kernel_offsets = btf::kernel_offsets(structs.as_ref());
        config.rss_counters = btf::rss_counter_layout(structs.as_ref());
        drop(structs);
        let mut rss_hook = RssHook::wanted(&config.rss_counters);
        if config.kernel_offsets[tracer_common::kfield::TASK_MM] == u32::MAX {
            rss_hook = RssHook::Classic;
        }
        config.follow_restarts = opts.follow_restarts as u32;
        config.host_wide = opts.host_wide as u32;
        // The session drains the ring on every tick; a wake-up each time another eighth
        // of the ring fills up.
        config.wake_at_bytes = u64::from(opts.ring_buffer_bytes / 8);
        if let Some(h) = &opts.scope {
            let path = h.path.as_bytes();
            if path.len() <= tracer_common::SCOPE_PATH_LEN && !path.is_empty() {
                config.scope_root = h.root.unwrap_or(-1);
                config.scope_path_len = path.len() as u32;
                config.scope_path[..path.len()].copy_from_slice(path);
            } else {
                tracing::debug!("cgroup path {} is too long for the kernel's check: new members are found by listing", h.path);
            }
        }
        let unknown: Vec<&str> = tracer_common::kfield::ALL
            .iter()
            .filter(|(i, _, _)| config.kernel_offsets[*i] == u32::MAX)
            .map(|(_, _, m)| *m)
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                "no BTF offsets for {}: mapped files are named from /proc after the fact and exec arguments are not recorded",
                unknown.join(", ")
            );
        }
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

        // Taken before the first program is attached: no record can be older.
        let attached_at_ns = crate::clock::wall_now_ns();
        let mut attached = Vec::new();
        let mut missing = Vec::new();
        let mut kernel_btf = None;
        for (program, group) in probes::programs() {
            if group != ProbeGroup::Process && !opts.probes.contains(&group) || opts.without.contains(&program.tracepoint) {
                continue;
            }
            let label = program.label();
            if !tracefs.exists(program.category, program.tracepoint) {
                tracing::warn!("tracepoint {label} is not available on this kernel; going on without it");
                missing.push(format!("{label} (not on this kernel)"));
                continue;
            }
            let btf_program = BTF_PROGRAMS.iter().find(|(tp, _)| *tp == program.tracepoint).map(|(_, p)| *p);
            if let (Some(name), RssHook::Btf) = (btf_program, rss_hook) {
                match attach_btf(&mut ebpf, &mut kernel_btf, name, program.tracepoint) {
                    Ok(()) => {
                        attached.push(format!("{label} (BTF)"));
                        continue;
                    }
                    Err(why) => {
                        tracing::info!("BTF tracepoint {} not usable ({why}); using the classic tracepoint", program.tracepoint);
                        rss_hook = RssHook::Classic;
                    }
                }
            }
            match attach(&mut ebpf, program) {
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

        drop(kernel_btf);
        // Before the ring buffer is mapped: the two would add up in the peak.
        release_freed_heap();
        let ring = take(&mut ebpf, "EVENTS")?;
        let tgids = take(&mut ebpf, "TGIDS")?;
        let tids = take(&mut ebpf, "TIDS")?;
        let lost = take(&mut ebpf, "LOST")?;
        let listen_ports = take(&mut ebpf, "LISTEN_PORTS")?;
        let restart_watch = take(&mut ebpf, "RESTART_WATCH")?;
        let peers = take(&mut ebpf, "PEERS")?;
        let other_resets_kernel = take(&mut ebpf, "OTHER_RESETS")?;
        Ok(Capture {
            restart_watch,
            successors: Vec::new(),
            restart_of: None,
            joined: Vec::new(),
            moved: Vec::new(),
            peer_owners: std::collections::HashMap::new(),
            _ebpf: ebpf,
            logger,
            ring,
            tgids,
            tids,
            listen_ports,
            peers,
            other_resets_kernel,
            other_resets_seen: std::collections::BTreeMap::new(),
            lost,
            lost_seen: [0; PROBE_COUNT as usize],
            window: Vec::new(),
            complete_ns: 0,
            decoder: Decoder::new(layouts, crate::clock::Clock::now(), opts.follow_children),
            attached,
            missing,
            attached_at_ns,
            rss_threshold_bytes: opts.rss_threshold_bytes,
        })
    }

    /// Adds a thread group to the in-kernel filter, TGID first so that threads created
    /// while we list the existing ones are caught by task_newtask.
    pub fn add_process(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.tgids.insert(pid, 1, 0).map_err(|source| CaptureError::Map { map: "TGIDS", source })?;
        self.tids.insert(pid, pid, 0).map_err(|source| CaptureError::Map { map: "TIDS", source })?;
        for tid in crate::process::threads(pid) {
            self.tids.insert(tid, pid, 0).map_err(|source| CaptureError::Map { map: "TIDS", source })?;
        }
        let sockets = crate::process::tcp_sockets(pid);
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

    /// Takes in everything the kernel handed over and releases, in time order and
    /// attributed, the events that nothing still in the kernel can precede: those
    /// stamped [`RING_SKEW`] before the last read that emptied the ring. Also returns
    /// that limit: nothing released later is older.
    pub fn poll(&mut self, now_wall_ns: u64) -> Released {
        self.drain();
        self.poll_lost(now_wall_ns);
        let until_ns = self.complete_ns;
        Released { events: self.release(until_ns), until_ns }
    }

    /// The end of the capture: everything still in the ring buffer and in the window.
    /// Call [`Capture::poll`] until [`Capture::receive`] finds the ring empty first, so
    /// that a full ring is not decoded at once.
    pub fn finish(&mut self, now_wall_ns: u64) -> Vec<Event> {
        while self.drain() {}
        self.poll_lost(now_wall_ns);
        self.release(u64::MAX)
    }

    /// Takes in what the kernel handed over (decoded into the window), releasing nothing:
    /// what the session calls when the ring buffer wakes it, so that a burst never fills
    /// the ring while events wait for their time. Cheap: no sorting, no map reads.
    /// At most [`READ_CHUNK`] records; returns whether more are waiting.
    pub fn receive(&mut self) -> bool {
        self.drain()
    }

    /// Events taken in and not released yet.
    pub fn backlog(&self) -> usize {
        self.window.len()
    }

    /// Decodes up to [`READ_CHUNK`] records waiting in the ring buffer into the window,
    /// and notes the processes the kernel started tracing on its own; whether records
    /// were left in the ring.
    fn drain(&mut self) -> bool {
        let started = self.decoder.wall(crate::clock::clock_ns(libc::CLOCK_MONOTONIC));
        let mut newest = 0u64;
        let mut read = 0usize;
        let emptied = loop {
            if read == READ_CHUNK {
                break false;
            }
            let Some(item) = self.ring.next() else { break true };
            read += 1;
            match decode::adoption(&item) {
                Some(decode::Adoption::Joined { task }) => {
                    self.joined.push(task);
                    continue;
                }
                Some(decode::Adoption::Moved { task }) => {
                    if !self.moved.contains(&task) {
                        self.moved.push(task);
                    }
                    continue;
                }
                Some(decode::Adoption::Successor { gap_ns }) => {
                    if let Some(ev) = self.decoder.decode(&item) {
                        // The restart event right behind its exec, in the window: it is
                        // released in its place, however soon the exec is.
                        let restart = self.restart_of.map(|old| restart_event(&ev, old, gap_ns));
                        self.restart_of = Some(ev.pid);
                        self.successors.push(ev.pid);
                        self.window.push(ev);
                        self.window.extend(restart);
                    }
                    continue;
                }
                None => {}
            }
            if let Some(ev) = self.decoder.decode(&item) {
                newest = newest.max(ev.ts_ns);
                self.window.push(ev);
            }
        };
        // The ring was empty: what was stamped before the read began (less the skew) is
        // in. Else every record still in the ring was reserved after the newest one read,
        // so stamped after it less the skew.
        let complete = if emptied { started } else { newest };
        self.complete_ns = self.complete_ns.max(complete.saturating_sub(RING_SKEW.as_nanos() as u64));
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
        !emptied
    }

    /// Sorts the window by time and hands out everything not newer than `until`,
    /// attributing resets on the way out.
    fn release(&mut self, until: u64) -> Vec<Event> {
        if self.window.is_empty() {
            return Vec::new();
        }
        self.window.sort_by_key(|e| e.ts_ns);
        let split = self.window.partition_point(|e| e.ts_ns <= until);
        let mut out: Vec<Event> = self.window.drain(..split).collect();
        for ev in &mut out {
            self.decoder.attribute(ev);
        }
        // Resets nobody traced owns are counted, not written: on a busy host they would be
        // most of the trace.
        out.retain(|ev| match &ev.kind {
            EventKind::TcpReset { attributed_by: None, reason, direction, .. } => {
                let key = match (direction, reason) {
                    (crate::event::Direction::Received, _) => "received".to_string(),
                    (_, Some(r)) if !r.is_empty() => r.clone(),
                    _ => "no reason".to_string(),
                };
                *self.other_resets_seen.entry(key).or_insert(0) += 1;
                false
            }
            _ => true,
        });
        self.name_peers(out)
    }

    /// After each connect of a traced client to a server on this host, a `peer` event
    /// naming the server's process. The server is not traced for it (its own listener
    /// and resets would then be taken for the client's); its OOM kill is seen anyway
    /// (mark_victim is traced host-wide).
    fn name_peers(&mut self, events: Vec<Event>) -> Vec<Event> {
        let connected = |e: &Event| {
            matches!(&e.kind, EventKind::TcpState { old_state, new_state, .. }
                if e.pid != 0 && old_state.ends_with("SYN_SENT") && new_state.ends_with("ESTABLISHED"))
        };
        if !events.iter().any(connected) {
            return events;
        }
        let mut out = Vec::with_capacity(events.len() + 1);
        for ev in events {
            let peer = match &ev.kind {
                EventKind::TcpState { daddr, .. } if connected(&ev) => daddr.parse::<std::net::SocketAddr>().ok().map(|a| (a, daddr.clone())),
                _ => None,
            };
            let client = ev.pid;
            let ts = ev.ts_ns;
            out.push(ev);
            let Some((addr, remote)) = peer else { continue };
            // Looked up once per port, and again once its owner has gone (a restart).
            let fresh = match self.peer_owners.get(&addr.port()) {
                None => true,
                Some(Some((p, _))) => !crate::process::process_exists(*p),
                Some(None) => false,
            };
            if !fresh {
                continue;
            }
            let owner = crate::process::listener_owner(addr.port());
            self.peer_owners.insert(addr.port(), owner.clone());
            let Some((owner_pid, owner_comm)) = owner.filter(|(p, _)| *p != client) else { continue };
            // Its fatal signals are reported from now on: its fate, for the client's resets.
            if let Err(e) = self.peers.insert(owner_pid, 1, 0) {
                tracing::debug!("peer {owner_pid} not watched for signals: {e}");
            }
            out.push(Event { ts_ns: ts, pid: client, tid: client, comm: String::new(), kind: EventKind::Peer { remote, owner_pid, owner_comm } });
        }
        out
    }

    /// `Lost` events (into the window) for every probe whose failed-reservation counter
    /// moved.
    fn poll_lost(&mut self, now_wall_ns: u64) {
        for probe in Probe::ALL {
            let total: u64 = match self.lost.get(&(probe as u32), 0) {
                Ok(per_cpu) => per_cpu.iter().sum(),
                Err(_) => continue,
            };
            let seen = &mut self.lost_seen[probe as usize];
            if total > *seen {
                self.window.push(Event {
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

    /// Watches for the successor of `pid`, whose arguments in memory are `cmdline`: from
    /// its end on, the kernel traces the first process that execs the same arguments.
    pub fn watch_restarts(&mut self, pid: u32, cmdline: &[u8]) -> Result<(), CaptureError> {
        self.restart_of = Some(pid);
        let watch = tracer_common::RestartWatch::new(pid, cmdline);
        self.restart_watch.set(0, watch, 0).map_err(|source| CaptureError::Map { map: "RESTART_WATCH", source })
    }

    /// The successors the kernel adopted since the last call, in order: traced already,
    /// their exec and `restart` event in the trace.
    pub fn take_successors(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.successors)
    }

    /// Tasks the kernel took in since the last call as they moved into the `--cgroup`
    /// scope. Each is traced as its own thread group until [`Capture::settle_joined`].
    pub fn take_joined(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.joined)
    }

    /// Resets elsewhere on the host, per reason: those the kernel only counted and those
    /// that reached user space but belong to no traced process.
    pub fn other_resets(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = self.other_resets_seen.clone();
        for slot in 0..tracer_common::OTHER_RESET_SLOTS {
            let n: u64 = match self.other_resets_kernel.get(&slot, 0) {
                Ok(per_cpu) => per_cpu.iter().sum(),
                Err(_) => continue,
            };
            if n == 0 {
                continue;
            }
            let key = match slot {
                tracer_common::OTHER_RESET_RECEIVED => "received".to_string(),
                tracer_common::OTHER_RESET_NO_REASON => "no reason".to_string(),
                r => self.decoder.reset_reason_name(r as i64),
            };
            *out.entry(key).or_insert(0) += n;
        }
        out
    }

    /// Takes a thread group that ended out of the in-kernel filter, so that the map keeps
    /// room for the processes to come and a reused pid is not traced by mistake (the
    /// agent, which runs for days; a trace ends first). Its ports stay: resets after its
    /// death are still its own.
    pub fn forget_process(&mut self, pid: u32) {
        let _ = self.tgids.remove(&pid);
    }

    /// Traced tasks that moved to another cgroup since the last call (once each).
    pub fn take_moved(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.moved)
    }

    /// Files a task the kernel took in under its real thread group: the whole group when
    /// it is the leader, or the thread alone under its leader. Returns that group (None:
    /// the task is gone already, its exit is in the trace).
    pub fn settle_joined(&mut self, task: u32) -> Result<Option<u32>, CaptureError> {
        let Some(tgid) = crate::process::thread_group(task) else { return Ok(None) };
        if tgid != task {
            let _ = self.tgids.remove(&task);
            self.tids.insert(task, tgid, 0).map_err(|source| CaptureError::Map { map: "TIDS", source })?;
        }
        self.add_process(tgid)?;
        Ok(Some(tgid))
    }

    pub fn lost_total(&self) -> u64 {
        self.lost_seen.iter().sum()
    }
}

/// The name `lost` events give a probe.
pub fn probe_label(p: Probe) -> &'static str {
    probes::spec(p).label
}

fn attach(ebpf: &mut Ebpf, p: &probes::Program) -> Result<(), String> {
    let program: &mut TracePoint = ebpf
        .program_mut(p.name)
        .ok_or_else(|| format!("program {} missing from the object", p.name))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load().map_err(|e| format!("{e:#}"))?;
    program.attach(p.category, p.tracepoint).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

/// Loads and attaches the BTF tracepoint program `name` to `tracepoint`, parsing the
/// kernel's BTF once for all of them.
fn attach_btf(ebpf: &mut Ebpf, btf: &mut Option<aya::Btf>, name: &str, tracepoint: &str) -> Result<(), String> {
    if btf.is_none() {
        *btf = Some(aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?);
    }
    let Some(btf) = btf.as_ref() else {
        return Err("no kernel BTF".into());
    };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load(tracepoint, btf).map_err(|e| format!("{e:#}"))?;
    program.attach().map_err(|e| format!("{e:#}"))?;
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::MissingMap(name))?;
    T::try_from(map).map_err(|source| CaptureError::Map { map: name, source })
}
/// The `restart` event for `exec`, the successor of `old_pid`, which ended `gap_ns` before.
fn restart_event(exec: &Event, old_pid: u32, gap_ns: u64) -> Event {
    let argv = match &exec.kind {
        EventKind::Exec { argv: Some(a), .. } => a.clone(),
        _ => Vec::new(),
    };
    let parent = crate::process::parent(exec.pid);
    Event {
        ts_ns: exec.ts_ns,
        pid: exec.pid,
        tid: exec.pid,
        comm: exec.comm.clone(),
        kind: EventKind::Restart {
            old_pid,
            new_pid: exec.pid,
            gap_ns,
            argv,
            parent_pid: parent.as_ref().map(|p| p.0),
            parent_comm: parent.map(|p| p.1),
        },
    }
}



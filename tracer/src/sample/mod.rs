//! Periodic context from user space: [`EventKind::Sample`] events with what procfs says
//! of each traced process, the target's memory cgroup, NVIDIA GPUs (NVML) and the
//! machine's memory. Taken by the tracer in its own event loop, every
//! `--sample-interval`: reading these files costs the target nothing.
//!
//! One [`Sampler`] per session. It keeps its files open and reads each with one `pread`
//! into a reused buffer: a sample allocates only what it returns.
pub mod cgroup;
pub mod gpu;
pub mod members;
pub mod procfs;
pub mod stall;
pub mod system;

use std::{
    fs::File,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use thiserror::Error;

use self::{cgroup::CgroupSampler, gpu::GpuSampler, procfs::ProcSampler, system::SystemSampler};
use crate::{
    process as target,
    clock::wall_now_ns,
    event::{Event, EventKind},
};

#[derive(Debug, Error)]
pub enum SampleError {
    #[error("cannot open {path}: {source} (is /proc mounted?)")]
    Open { path: &'static str, source: std::io::Error },
}

/// Samples the traced processes and their context.
pub struct Sampler {
    target_pid: u32,
    target_comm: String,
    interval: Duration,
    next: Option<Instant>,
    /// Traced processes still worth sampling: the target first, then the children it
    /// forked that are traced (seen in fork/exit events).
    pids: Vec<u32>,
    gone: Vec<u32>,
    procs: ProcSampler,
    cgroup: CgroupSampler,
    gpu: GpuSampler,
    system: SystemSampler,
}

impl Sampler {
    /// For a session on `target_pid`, sampling every `interval`. With `follow_children`
    /// the target's current descendants are sampled too (as the capture traces them);
    /// later children join through [`Sampler::observe`].
    pub fn new(target_pid: u32, follow_children: bool, interval: Duration) -> Result<Sampler, SampleError> {
        let mut pids = vec![target_pid];
        if follow_children {
            pids.extend(target::descendants(target_pid));
        }
        let target_comm = std::fs::read_to_string(format!("/proc/{target_pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        Ok(Sampler {
            target_pid,
            target_comm,
            interval,
            next: None,
            pids,
            gone: Vec::new(),
            procs: ProcSampler::new(),
            cgroup: CgroupSampler::new(target_pid),
            gpu: GpuSampler::new(),
            system: SystemSampler::new()?,
        })
    }

    /// Follows the traced processes through the capture's events: a traced fork adds
    /// its child, the end of a process removes it.
    pub fn observe(&mut self, events: &[Event]) {
        for e in events {
            match e.kind {
                EventKind::Fork { child_pid, thread: false, traced: true, .. } if !self.pids.contains(&child_pid) => {
                    self.pids.push(child_pid)
                }
                EventKind::Exit { group_dead: true, .. } => self.pids.retain(|&p| p != e.pid),
                _ => {}
            }
        }
    }

    /// A process that joined the traced scope (`--cgroup`): sampled from now on.
    pub fn add(&mut self, pid: u32) {
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    /// The target was restarted as `pid` (`--follow-restarts`): sample it from now on, and
    /// the memory cgroup it is in.
    pub fn retarget(&mut self, pid: u32) {
        self.target_pid = pid;
        if !self.pids.contains(&pid) {
            self.pids.insert(0, pid);
        }
        self.cgroup = CgroupSampler::new(pid);
    }

    /// A traced task moved to another cgroup: when it is the target, the next poll
    /// samples at once, so that the cgroup it moved to (and its limit) is in the trace
    /// before anything happens there.
    pub fn moved(&mut self, task: u32) {
        if task == self.target_pid {
            self.next = None;
        }
    }

    /// The next poll samples at once (the kernel said memory is short: fresh points).
    pub fn sample_soon(&mut self) {
        self.next = None;
    }

    /// The target's memory cgroup folder and version, once a sample located it.
    pub fn memory_cgroup(&self) -> Option<(&str, u8)> {
        self.cgroup.located()
    }

    pub fn target_comm(&self) -> &str {
        &self.target_comm
    }

    /// The processes the next sample covers.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// A sample when the interval has elapsed since the last one (the first one at once).
    pub fn poll(&mut self, now: Instant) -> Option<Event> {
        if self.interval.is_zero() || self.next.is_some_and(|t| now < t) {
            return None;
        }
        // Keep the cadence; after a stall, start again from now.
        self.next = Some(match self.next {
            Some(t) if t + self.interval > now => t + self.interval,
            _ => now + self.interval,
        });
        Some(self.sample())
    }

    /// Samples now: an event at the wall clock, about the target. Processes found gone
    /// are not sampled again (a pid is never followed into another process).
    pub fn sample(&mut self) -> Event {
        let pids = std::mem::take(&mut self.pids);
        let kind = self.sample_pids(&pids);
        self.pids = pids;
        let gone = &self.gone;
        self.pids.retain(|p| !gone.contains(p));
        if let EventKind::Sample { processes, .. } = &kind {
            if let Some(t) = processes.iter().find(|p| p.pid == self.target_pid) {
                if t.comm != self.target_comm {
                    self.target_comm.clone_from(&t.comm);
                }
            }
        }
        Event {
            ts_ns: wall_now_ns(),
            pid: self.target_pid,
            tid: self.target_pid,
            comm: self.target_comm.clone(),
            kind,
        }
    }

    /// A sample of `pids` (the live ones), the target's memory cgroup, the GPUs and the
    /// system. Pids found gone are kept in `self.gone` until the next call.
    pub fn sample_pids(&mut self, pids: &[u32]) -> EventKind {
        self.gone.clear();
        let mut processes = Vec::with_capacity(pids.len());
        self.procs.sample(pids, &mut processes, &mut self.gone);
        if !pids.contains(&self.target_pid) || self.gone.contains(&self.target_pid) {
            // Exited: its cgroup is still sampled, where it was.
            self.cgroup.forget_process();
        }
        let mut cgroup = self.cgroup.sample();
        if let Some(cg) = cgroup.as_mut() {
            cg.members = members::top_members(std::path::Path::new(&cg.path));
        }
        let mut gpus = Vec::new();
        self.gpu.sample(pids, &mut gpus);
        let system = self.system.sample();
        EventKind::Sample { processes, cgroup, gpus, system }
    }
}

/// Reads a whole procfs/cgroupfs file from its start into `buf` (kept for the next
/// read) with `pread`, so the file can stay open; the number of bytes read.
pub(crate) fn read_whole(file: &File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork(parent: u32, child: u32, thread: bool, traced: bool) -> Event {
        Event {
            ts_ns: 1,
            pid: parent,
            tid: parent,
            comm: "p".into(),
            kind: EventKind::Fork { child_pid: child, child_comm: "c".into(), thread, clone_flags: 0, traced },
        }
    }

    fn exit(pid: u32) -> Event {
        Event {
            ts_ns: 2,
            pid,
            tid: pid,
            comm: "c".into(),
            kind: EventKind::Exit {
                group_dead: true,
                exit_code: Some(0),
                signal: None,
                signal_name: None,
                core_dumped: false,
                source: "unknown".into(),
            },
        }
    }

    #[test]
    fn traced_children_join_and_leave_with_fork_and_exit_events() {
        let me = std::process::id();
        let mut s = Sampler::new(me, false, Duration::from_millis(100)).unwrap();
        assert_eq!(s.pids(), [me]);
        s.observe(&[fork(me, 7001, false, true), fork(me, 7002, true, true), fork(me, 7003, false, false)]);
        assert_eq!(s.pids(), [me, 7001]);
        s.observe(&[fork(me, 7001, false, true), exit(7001)]);
        assert_eq!(s.pids(), [me]);
    }

    #[test]
    fn sample_of_this_process_has_it_and_the_system_and_drops_dead_pids() {
        let me = std::process::id();
        let mut s = Sampler::new(me, false, Duration::from_millis(100)).unwrap();
        s.observe(&[fork(me, u32::MAX - 1, false, true)]);
        let ev = s.sample();
        assert_eq!((ev.pid, ev.tid, ev.kind_name()), (me, me, "sample"));
        assert!(!ev.comm.is_empty());
        let EventKind::Sample { processes, gpus, system, .. } = &ev.kind else { unreachable!() };
        assert_eq!(processes.len(), 1);
        assert!(processes[0].pid == me && processes[0].rss_bytes > 0 && processes[0].threads >= 1, "{processes:?}");
        assert!(system.mem_total_bytes > 0);
        assert!(gpus.iter().all(|g| g.total_bytes > 0));
        // The vanished pid is not sampled again.
        assert_eq!(s.pids(), [me]);
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.contains(r#""kind":"sample""#) && line.contains(r#""processes":[{"#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
    }

    #[test]
    fn poll_samples_at_once_then_every_interval() {
        let me = std::process::id();
        let mut s = Sampler::new(me, false, Duration::from_millis(100)).unwrap();
        let t0 = Instant::now();
        assert!(s.poll(t0).is_some());
        assert!(s.poll(t0 + Duration::from_millis(50)).is_none());
        assert!(s.poll(t0 + Duration::from_millis(100)).is_some());
        assert!(s.poll(t0 + Duration::from_millis(150)).is_none());
        // A tick that comes late still keeps the 100 ms cadence...
        assert!(s.poll(t0 + Duration::from_millis(210)).is_some());
        assert!(s.poll(t0 + Duration::from_millis(300)).is_some());
        // ...and a long stall does not cause a burst.
        assert!(s.poll(t0 + Duration::from_millis(1000)).is_some());
        assert!(s.poll(t0 + Duration::from_millis(1050)).is_none());
        let mut off = Sampler::new(me, false, Duration::ZERO).unwrap();
        assert!(off.poll(t0).is_none());
    }

    #[test]
    fn read_whole_rereads_an_open_file_and_grows_for_big_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_whole(&f, &mut buf).unwrap(), 10_000);
        assert_eq!(read_whole(&File::open("/proc/self/status").unwrap(), &mut buf).map(|n| n > 100).ok(), Some(true));
    }

    /// How long one sample takes (run with --nocapture to see it).
    #[test]
    fn one_sample_is_cheap() {
        let me = std::process::id();
        let mut s = Sampler::new(me, false, Duration::from_millis(100)).unwrap();
        s.sample();
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(s.sample());
        }
        let per = t.elapsed() / n;
        eprintln!("one sample (1 process, cgroup, system, gpu={}): {per:?}", s.gpu.available());
        // Generous: a debug build on a loaded CI machine.
        assert!(per < Duration::from_millis(5), "{per:?}");
    }
}

//! Per-process context from procfs: comm, state, RSS, VmSize, VmHWM, threads, open fds.
//!
//! Each traced pid keeps a [`procfs::process::Process`] (a `/proc/PID` directory handle,
//! so a recycled pid is never mistaken for ours) and its `status` file open; a sample is
//! one `pread` of `status` plus one `stat` of `fd` (its size is the fd count since Linux
//! 6.2). A pid that vanished is reported as gone, never as an error.
use std::{collections::HashMap, fs::File};

use ::procfs::process::Process;

use super::read_whole;
use crate::event::ProcessSample;

/// The open handles of one traced process.
struct Tracked {
    process: Process,
    status: File,
}

#[derive(Default)]
pub struct ProcSampler {
    tracked: HashMap<u32, Tracked>,
    buf: Vec<u8>,
}

/// The fields of /proc/PID/status a sample keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusFields<'a> {
    pub name: &'a str,
    pub state: &'a str,
    pub rss_bytes: u64,
    pub vm_size_bytes: u64,
    pub vm_hwm_bytes: u64,
    pub threads: u64,
    /// It has an address space (`VmSize` is there): not a zombie, not past exit_mm().
    pub has_mm: bool,
}

/// Parses /proc/PID/status text. None when `Name` or `State` is missing (not a status
/// file). Zombies, exiting processes and kernel threads have no `Vm*` lines: those read as 0.
pub fn parse_status(text: &str) -> Option<StatusFields<'_>> {
    let mut name = None;
    let mut state = None;
    let mut f = StatusFields {
        name: "",
        state: "",
        rss_bytes: 0,
        vm_size_bytes: 0,
        vm_hwm_bytes: 0,
        threads: 0,
        has_mm: false,
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Name" => name = Some(value),
            // `R (running)`: the letter only.
            "State" => state = value.split_whitespace().next(),
            "VmRSS" => f.rss_bytes = kb(value),
            "VmSize" => {
                f.vm_size_bytes = kb(value);
                f.has_mm = true;
            }
            "VmHWM" => f.vm_hwm_bytes = kb(value),
            "Threads" => f.threads = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    f.name = name?;
    f.state = state?;
    Some(f)
}

/// `1234 kB` -> bytes.
fn kb(value: &str) -> u64 {
    value.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).map_or(0, |n| n.saturating_mul(1024))
}

impl ProcSampler {
    pub fn new() -> ProcSampler {
        ProcSampler { tracked: HashMap::new(), buf: Vec::with_capacity(4096) }
    }

    /// Samples each pid of `pids` into `out`; pids that no longer exist, or that exited
    /// (zombies, and processes that already gave up their memory on the way out), go to
    /// `gone`. Handles of pids no longer asked for are closed.
    pub fn sample(&mut self, pids: &[u32], out: &mut Vec<ProcessSample>, gone: &mut Vec<u32>) {
        self.tracked.retain(|pid, _| pids.contains(pid));
        for &pid in pids {
            match self.sample_one(pid) {
                Some(s) => out.push(s),
                None => {
                    self.tracked.remove(&pid);
                    gone.push(pid);
                }
            }
        }
    }

    fn sample_one(&mut self, pid: u32) -> Option<ProcessSample> {
        let tracked = match self.tracked.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let process = Process::new(i32::try_from(pid).ok()?).ok()?;
                let status = process.open_relative("status").ok()?;
                e.insert(Tracked { process, status })
            }
        };
        let n = read_whole(&tracked.status, &mut self.buf).ok()?;
        let text = String::from_utf8_lossy(&self.buf[..n]);
        let f = parse_status(&text)?;
        // Exited: a zombie (whose other threads are gone too), or dying (no memory left).
        // A process whose main thread alone exited shows as a zombie with live threads.
        let zombie = (f.state == "Z" && f.threads <= 1) || f.state == "X";
        if zombie || (!f.has_mm && f.state != "Z") {
            return None;
        }
        let fds = tracked.process.fd_count().ok().map(|n| n as u64);
        Some(ProcessSample {
            pid,
            comm: f.name.to_string(),
            state: f.state.to_string(),
            rss_bytes: f.rss_bytes,
            vm_size_bytes: f.vm_size_bytes,
            vm_hwm_bytes: f.vm_hwm_bytes,
            threads: f.threads,
            fds,
            // Read each time: a wrapper shell's `ulimit -v` often comes after the first sample.
            address_space_limit_bytes: tracked.process.limits().ok().and_then(|l| match l.max_address_space.soft_limit {
                procfs::process::LimitValue::Value(v) => Some(v),
                procfs::process::LimitValue::Unlimited => None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4711\nPid:\t4711\n\
        VmPeak:\t  300000 kB\nVmSize:\t  262144 kB\nVmHWM:\t  210000 kB\nVmRSS:\t  204800 kB\n\
        RssAnon:\t  200000 kB\nThreads:\t3\nSigQ:\t0/95000\n";

    #[test]
    fn status_text_gives_comm_state_memory_and_threads() {
        let f = parse_status(STATUS).unwrap();
        assert_eq!(f.name, "python3");
        assert_eq!(f.state, "S");
        assert_eq!(f.rss_bytes, 204800 * 1024);
        assert_eq!(f.vm_size_bytes, 262144 * 1024);
        assert_eq!(f.vm_hwm_bytes, 210000 * 1024);
        assert_eq!(f.threads, 3);
    }

    #[test]
    fn zombie_status_without_vm_lines_reads_as_zero_and_garbage_is_none() {
        let f = parse_status("Name:\tdefunct\nState:\tZ (zombie)\nThreads:\t1\n").unwrap();
        assert_eq!((f.state, f.rss_bytes, f.vm_hwm_bytes, f.has_mm), ("Z", 0, 0, false));
        assert!(parse_status(STATUS).unwrap().has_mm);
        assert!(parse_status("").is_none());
        assert!(parse_status("not a status file").is_none());
    }

    #[test]
    fn own_process_has_rss_and_threads_and_fds() {
        let me = std::process::id();
        let mut s = ProcSampler::new();
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        s.sample(&[me], &mut out, &mut gone);
        assert!(gone.is_empty(), "{gone:?}");
        let p = &out[0];
        assert_eq!(p.pid, me);
        assert!(p.rss_bytes > 0 && p.vm_size_bytes >= p.rss_bytes && p.vm_hwm_bytes >= p.rss_bytes, "{p:?}");
        assert!(p.threads >= 1, "{p:?}");
        assert!(p.fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(!p.comm.is_empty() && ["R", "S"].contains(&p.state.as_str()), "{p:?}");
        // Sampled again through the cached handles.
        out.clear();
        s.sample(&[me], &mut out, &mut gone);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn vanished_and_exited_pids_are_gone_not_errors() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut s = ProcSampler::new();
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        // Exited but not reaped yet (a zombie), then reaped.
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.sample(&[pid, u32::MAX - 1], &mut out, &mut gone);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(gone, vec![pid, u32::MAX - 1]);
        child.wait().unwrap();
        gone.clear();
        s.sample(&[pid], &mut out, &mut gone);
        assert!(out.is_empty() && gone == vec![pid]);
    }

    #[test]
    fn a_process_that_dies_after_its_first_sample_is_gone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let mut s = ProcSampler::new();
        let (mut out, mut gone) = (Vec::new(), Vec::new());
        s.sample(&[pid], &mut out, &mut gone);
        assert_eq!(out.len(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        out.clear();
        s.sample(&[pid], &mut out, &mut gone);
        assert!(out.is_empty() && gone == vec![pid], "{out:?} {gone:?}");
    }
}

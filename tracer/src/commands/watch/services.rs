//! The services in scope of `tracer watch` (`--cgroup`, `--unit`, `--match`): their
//! processes get full detail (memory calls, RSS, samples of their memory cgroup), found
//! by listing the cgroup or /proc every few seconds, and by the kernel as they fork or
//! move in. Everything else on the host is watched for rare events only.
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    capture::Capture,
    event::Event,
    forecast::Forecaster,
    process::{self, identity::Identity},
    sample::Sampler,
};

/// What a service is made of.
#[derive(Clone, Debug)]
pub enum Selector {
    /// A cgroup folder and its subtree (`--cgroup`, `--unit`).
    Cgroup(PathBuf),
    /// Processes whose name (comm) is this (`--match`); a trailing `*` matches a prefix.
    Comm(String),
}

impl Selector {
    fn matches_comm(pattern: &str, comm: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => comm.starts_with(prefix),
            None => comm == pattern,
        }
    }

    /// The live processes of the service now.
    fn members(&self) -> Vec<u32> {
        match self {
            Selector::Cgroup(dir) => process::scope::members(dir),
            Selector::Comm(pattern) => {
                let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
                let mut out: Vec<u32> = rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                    .filter(|&pid| Self::matches_comm(pattern, &process::comm(pid)))
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Selector::Cgroup(dir) => dir.display().to_string(),
            Selector::Comm(p) => format!("processes named {p}"),
        }
    }
}

pub struct Service {
    pub selector: Selector,
    /// Who the service is (from its cgroup, or its first process's).
    pub identity: Option<Arc<Identity>>,
    known: HashSet<u32>,
    sampler: Option<Sampler>,
    sample_every: Option<Duration>,
    /// `--warn-before`: the service's limits forecast from its samples and rss events.
    forecaster: Option<Forecaster>,
    warn_before: Option<Duration>,
    /// The identity of the memory cgroup the last sample read (a pod below a scoped
    /// slice is labelled as that pod), by its folder.
    sampled: Option<(String, Option<Arc<Identity>>)>,
    /// The cgroup version of a `--cgroup`/`--unit` folder (1 under the v1 memory mount).
    version: u8,
}

/// What the memory cgroup of a `--cgroup`/`--unit` folder holds now.
pub struct CgroupGauges {
    pub usage: u64,
    pub limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// The identity of a cgroup folder: its path in its hierarchy, and its inode (the
/// cgroup id on v2).
pub fn identity_of_dir(dir: &std::path::Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    let h = process::scope::hierarchy_of(dir)?;
    let mut id = process::identity::parse(&h.path);
    id.cgroup_id = std::fs::metadata(dir).ok().map(|m| m.ino());
    Some(id)
}

impl Service {
    pub fn new(selector: Selector, sample_every: Option<Duration>, warn_before: Option<Duration>) -> Service {
        let identity = match &selector {
            Selector::Cgroup(dir) => identity_of_dir(dir).map(Arc::new),
            Selector::Comm(_) => None,
        };
        let version = match &selector {
            Selector::Cgroup(dir) if host::memcg::read_mounts().of_version(1).is_some_and(|m| dir.starts_with(&m.mountpoint)) => 1,
            _ => 2,
        };
        Service {
            selector,
            identity,
            known: HashSet::new(),
            sampler: None,
            sample_every,
            forecaster: None,
            warn_before: warn_before.filter(|_| sample_every.is_some()),
            sampled: None,
            version,
        }
    }

    /// The service's own memory cgroup, read directly (for `--cgroup`/`--unit`): there
    /// whether or not a process of it lived long enough to be sampled. None when the
    /// folder is no memory cgroup (or gone).
    pub fn gauges(&self) -> Option<CgroupGauges> {
        let Selector::Cgroup(dir) = &self.selector else { return None };
        let version = self.version;
        let level = host::memcg::read_level(dir, version)?;
        let files = host::memcg::control_files(version);
        let oom_kills = std::fs::read_to_string(dir.join(files.events)).ok().and_then(|t| host::memcg::parse_keyed(&t, "oom_kill"));
        Some(CgroupGauges { usage: level.usage, limit: level.limit, oom_kills })
    }

    /// Whether the service's cgroup folder is gone (never for `--match`).
    pub fn removed(&self) -> bool {
        matches!(&self.selector, Selector::Cgroup(dir) if !dir.is_dir())
    }

    /// Lists the service's processes and traces the new ones; returns them. The first
    /// process found anchors the sampler (its memory cgroup); a cgroup that is gone keeps
    /// its identity (its verdicts still name it).
    pub fn refresh(&mut self, capture: &mut Capture) -> Vec<u32> {
        let members = self.selector.members();
        let mut new = Vec::new();
        for &pid in &members {
            if self.known.contains(&pid) {
                continue;
            }
            if let Err(e) = capture.add_process(pid) {
                tracing::debug!("pid {pid} of {}: {e}", self.selector.describe());
                continue;
            }
            self.adopt(pid);
            new.push(pid);
        }
        // Gone processes are forgotten, so a reused pid is taken in again.
        let live: HashSet<u32> = members.into_iter().collect();
        self.known.retain(|p| live.contains(p) || process::process_exists(*p));
        new
    }

    /// A process of the service, traced already (found by a listing, or taken in by the
    /// kernel as it moved into the cgroup).
    pub fn adopt(&mut self, pid: u32) {
        if !self.known.insert(pid) {
            return;
        }
        if self.identity.is_none() {
            self.identity = process::identity::of_pid(pid).map(Arc::new);
        }
        match self.sampler.as_mut() {
            Some(s) => s.add(pid),
            None => {
                self.forecaster = self.warn_before.map(|w| Forecaster::new(pid, w));
                self.sampler = self.sample_every.and_then(|every| match Sampler::new(pid, true, every) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!("no samples of {}: {e}", self.selector.describe());
                        None
                    }
                })
            }
        }
    }

    /// Whether the kernel's scope check is this service's (the first cgroup given).
    pub fn is_cgroup(&self) -> bool {
        matches!(self.selector, Selector::Cgroup(_))
    }

    /// The sampler follows forks and exits of the service's processes.
    pub fn observe(&mut self, events: &[Event]) {
        if let Some(s) = self.sampler.as_mut() {
            s.observe(events);
        }
    }

    /// A sample when one is due, with the identity of the memory cgroup it read.
    pub fn poll(&mut self, now: Instant) -> Option<(Event, Option<Arc<Identity>>)> {
        let s = self.sampler.as_mut()?;
        if s.pids().is_empty() {
            return None;
        }
        let sample = s.poll(now)?;
        let path = match &sample.kind {
            crate::event::EventKind::Sample { cgroup: Some(cg), .. } => cg.path.clone(),
            _ => return Some((sample, self.identity.clone())),
        };
        if self.sampled.as_ref().is_none_or(|(p, _)| *p != path) {
            let id = identity_of_dir(std::path::Path::new(&path)).map(Arc::new);
            self.sampled = Some((path, id));
        }
        let who = self.sampled.as_ref().and_then(|(_, id)| id.clone()).or_else(|| self.identity.clone());
        Some((sample, who))
    }

    /// Feeds the forecaster one of the service's events (its samples, its processes'
    /// rss, ends and OOM kills); a `forecast` when a limit is about to be reached.
    pub fn forecast(&mut self, ev: &Event) -> Option<Event> {
        self.forecaster.as_mut()?.observe(ev)
    }

    pub fn processes(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_matches_whole_or_by_its_prefix() {
        assert!(Selector::matches_comm("gunicorn", "gunicorn"));
        assert!(!Selector::matches_comm("gunicorn", "gunicorn: worker"));
        assert!(Selector::matches_comm("python*", "python3.11"));
        assert!(!Selector::matches_comm("python*", "ipython"));
    }

    #[test]
    fn a_comm_selector_finds_this_test_process() {
        let me = std::process::id();
        let comm = process::comm(me);
        assert!(!comm.is_empty());
        assert!(Selector::Comm(comm).members().contains(&me));
    }
}

//! Memory: the cgroup layout, the memory cgroup of `--pid` (or of the doctor itself)
//! with the tightest limit on its path, the machine's memory and swap. Located and read
//! with the samplers' own code ([`crate::sample::cgroup`], [`crate::sample::system`]),
//! and the limits on the path with [`host::memcg`], as the workload's budget check reads
//! them: the doctor warns about the limit the workload would refuse a load for.
use host::memcg::{self, control_files, has_memory_controller, tightest, Level, Mounts};

use super::{Check, Status};
use crate::{
    process as target,
    units::format_bytes,
    event::CgroupSample,
    sample::{
        cgroup::CgroupSampler,
        system::{parse_meminfo, parse_pressure},
    },
};

/// Usage at or above this share of the limit is a warning: the next allocation may be
/// the one the OOM killer answers.
pub const NEAR_LIMIT: f64 = 0.90;

/// The `cgroup` row: which hierarchy holds the memory controller.
pub fn check_cgroup_layout(mounts: &Mounts, v2_controllers: Option<&str>) -> Check {
    let v2_memory = v2_controllers.is_some_and(has_memory_controller);
    match (&mounts.v1_memory, &mounts.v2) {
        (Some(v1), Some(v2)) if !v2_memory => Check::ok(
            "cgroup",
            format!(
                "hybrid: the memory controller is on cgroup v1 at {}; v2 at {} has none",
                v1.mountpoint, v2.mountpoint
            ),
        ),
        (Some(v1), _) => Check::ok("cgroup", format!("cgroup v1, memory controller at {}", v1.mountpoint)),
        (None, Some(v2)) if v2_memory => {
            Check::ok("cgroup", format!("cgroup v2 at {} with the memory controller", v2.mountpoint))
        }
        (None, Some(v2)) => Check::warn(
            "cgroup",
            format!("cgroup v2 at {} without the memory controller: no memory limits to read", v2.mountpoint),
            format!("enable it: echo +memory > {}/cgroup.subtree_control", v2.mountpoint),
        ),
        (None, None) => Check::warn(
            "cgroup",
            "no cgroup hierarchy with the memory controller is mounted: no memory limits to read",
            "mount -t cgroup2 none /sys/fs/cgroup (or the v1 memory controller)",
        ),
    }
}

/// The file that sets a cgroup's limit.
pub fn limit_file(dir: &str, version: u8) -> String {
    format!("{dir}/{}", control_files(version).limit)
}

/// The memory cgroup of the process the report is about.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupMemory {
    pub sample: CgroupSample,
    /// The tightest limit on its path (itself or an ancestor).
    pub tightest: Option<Level>,
}

impl CgroupMemory {
    /// (dir, limit, usage) of the binding limit.
    pub fn binding(&self) -> Option<(&str, u64, u64)> {
        self.tightest.as_ref().and_then(|l| Some((l.dir.as_str(), l.limit?, l.usage)))
    }
}

/// The `memory_cgroup` row for `who` (`pid 4711 (workload)`).
pub fn check_memory_cgroup(who: &str, cg: Option<&CgroupMemory>) -> Check {
    let Some(cg) = cg else {
        return Check::info(
            "memory_cgroup",
            format!("{who} is in no memory cgroup with a controller: only the machine's memory limits it"),
        );
    };
    let s = &cg.sample;
    let mut finding = format!("{who}: {} (v{})", s.path, s.version);
    let Some((dir, limit, usage)) = cg.binding() else {
        finding.push_str(&format!(": no limit, {} in use", format_bytes(s.usage_bytes)));
        return Check::ok("memory_cgroup", finding);
    };
    let share = usage as f64 / limit.max(1) as f64;
    if dir == s.path {
        finding.push_str(&format!(
            ": limit {}, {} in use ({:.0}%)",
            format_bytes(limit),
            format_bytes(usage),
            share * 100.0
        ));
    } else {
        finding.push_str(&format!(
            ": bound by its ancestor {dir}: limit {}, {} in use ({:.0}%)",
            format_bytes(limit),
            format_bytes(usage),
            share * 100.0
        ));
    }
    if let Some(peak) = s.peak_bytes {
        finding.push_str(&format!(", peak {}", format_bytes(peak)));
    }
    let ooms = s.oom_kills.unwrap_or(0);
    if ooms > 0 {
        finding.push_str(&format!(", {ooms} OOM kill{} so far", if ooms == 1 { "" } else { "s" }));
    }
    let version = s.version;
    let raise = format!("raise the limit in {} (or load less into this cgroup)", limit_file(dir, version));
    if share >= NEAR_LIMIT {
        Check::warn("memory_cgroup", format!("{finding}: near its limit"), raise)
    } else if ooms > 0 {
        Check::warn("memory_cgroup", finding, raise)
    } else {
        Check::ok("memory_cgroup", finding)
    }
}

/// `(SwapTotal, SwapFree)` in bytes from /proc/meminfo text.
pub fn parse_swap(meminfo: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        meminfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * 1024)).flatten()
        })
    };
    Some((get("SwapTotal")?, get("SwapFree")?))
}

/// The `memory` row: total, available, pressure (PSI avg10, where the kernel has it).
pub fn check_memory(total: u64, available: u64, psi: (Option<f64>, Option<f64>)) -> Check {
    let mut finding = format!("{} total, {} available", format_bytes(total), format_bytes(available));
    match psi {
        (Some(some), Some(full)) => finding.push_str(&format!("; pressure avg10 some {some:.2}%, full {full:.2}%")),
        (Some(some), None) => finding.push_str(&format!("; pressure avg10 some {some:.2}%")),
        _ => finding.push_str("; no pressure figures (PSI off)"),
    }
    if total > 0 && (available as f64) < total as f64 * 0.10 {
        Check::warn(
            "memory",
            format!("{finding}: under 10% available"),
            "free memory, or expect the OOM killer on the next model load",
        )
    } else {
        Check::ok("memory", finding)
    }
}

/// The `swap` row: always `info`; no swap means an over-limit load is killed at once.
pub fn check_swap(swap: Option<(u64, u64)>) -> Check {
    match swap {
        Some((0, _)) => {
            Check::info("swap", "no swap: a load past the memory limit is OOM-killed at once, not slowed down")
        }
        Some((total, free)) => Check::info(
            "swap",
            format!(
                "{} swap, {} free: a load past the limit may page (slow) before it is killed",
                format_bytes(total),
                format_bytes(free)
            ),
        ),
        None => Check::info("swap", "no swap figures in /proc/meminfo"),
    }
}

/// Which process the memory rows are about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// `--pid`, alive: its pid and comm.
    Pid(u32, String),
    /// `--pid` of no process.
    Gone(u32),
    /// No `--pid`: the doctor itself.
    Doctor(u32),
}

impl Subject {
    pub fn describe(&self) -> String {
        match self {
            Subject::Pid(pid, comm) => format!("pid {pid} ({comm})"),
            Subject::Gone(pid) => format!("pid {pid}"),
            Subject::Doctor(_) => "tracer doctor itself".to_string(),
        }
    }
}

pub fn check_pid(subject: &Subject) -> Option<Check> {
    match subject {
        Subject::Pid(pid, comm) => {
            let cmd = target::cmdline(*pid);
            Some(Check::ok(
                "pid",
                format!("pid {pid} ({comm}): {}", if cmd.is_empty() { comm.as_str() } else { cmd.as_str() }),
            ))
        }
        Subject::Gone(pid) => Some(Check::fail(
            "pid",
            format!("no process with pid {pid}: its memory cgroup cannot be read"),
            format!("check it with `ps -p {pid}`, and give the model server's pid to --pid"),
        )),
        Subject::Doctor(_) => None,
    }
}

/// The machine's and the subject's memory, as the rows and the model checks use them.
#[derive(Clone, Debug)]
pub struct Facts {
    pub subject: Subject,
    pub mounts: Mounts,
    pub v2_controllers: Option<String>,
    pub cgroup: Option<CgroupMemory>,
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap: Option<(u64, u64)>,
    pub psi: (Option<f64>, Option<f64>),
}

impl Facts {
    pub fn gather(pid: Option<u32>) -> Facts {
        let subject = match pid {
            Some(p) if target::process_exists(p) => {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim().to_string();
                Subject::Pid(p, comm)
            }
            Some(p) => Subject::Gone(p),
            None => Subject::Doctor(std::process::id()),
        };
        let mounts = memcg::read_mounts();
        let v2_controllers = mounts
            .v2
            .as_ref()
            .and_then(|m| std::fs::read_to_string(format!("{}/cgroup.controllers", m.mountpoint)).ok());
        let cgroup = match subject {
            Subject::Pid(p, _) | Subject::Doctor(p) => {
                CgroupSampler::with_mounts(p, mounts.clone()).sample().map(|sample| {
                    let levels = mounts
                        .of_version(sample.version)
                        .map(|m| memcg::levels(&sample.path, &m.mountpoint, sample.version))
                        .unwrap_or_default();
                    CgroupMemory { tightest: tightest(&levels).cloned(), sample }
                })
            }
            Subject::Gone(_) => None,
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (mem_total, mem_available) = parse_meminfo(&meminfo).unwrap_or((0, 0));
        let psi = std::fs::read_to_string("/proc/pressure/memory").map(|t| parse_pressure(&t)).unwrap_or((None, None));
        Facts { subject, mounts, v2_controllers, cgroup, mem_total, mem_available, swap: parse_swap(&meminfo), psi }
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut out = vec![check_cgroup_layout(&self.mounts, self.v2_controllers.as_deref())];
        out.extend(check_pid(&self.subject));
        out.push(match &self.subject {
            Subject::Gone(pid) => Check::new(
                "memory_cgroup",
                Status::Skipped,
                format!("no process with pid {pid}"),
                Some("see the pid row".into()),
            ),
            s => check_memory_cgroup(&s.describe(), self.cgroup.as_ref()),
        });
        out.push(check_memory(self.mem_total, self.mem_available, self.psi));
        out.push(check_swap(self.swap));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::memcg::{parse_mountinfo, Mount};

    const HYBRID: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    fn sample(path: &str, limit: Option<u64>, usage: u64, ooms: u64) -> CgroupSample {
        CgroupSample {
            path: path.into(),
            version: 1,
            usage_bytes: usage,
            limit_bytes: limit,
            peak_bytes: Some(usage),
            oom_kills: Some(ooms),
            members: Vec::new(), pressure: None,
        }
    }

    #[test]
    fn layout_row_names_hybrid_v1_and_v2() {
        let c = check_cgroup_layout(&parse_mountinfo(HYBRID), Some("cpuset cpu io pids\n"));
        assert_eq!(c.status, Status::Ok);
        assert!(c.finding.starts_with("hybrid") && c.finding.contains("/sys/fs/cgroup/memory"), "{c:?}");
        let v2 = parse_mountinfo(V2);
        assert_eq!(check_cgroup_layout(&v2, Some("cpuset cpu io memory pids")).status, Status::Ok);
        let no_mem = check_cgroup_layout(&v2, Some("cpu io"));
        assert_eq!(no_mem.status, Status::Warn);
        assert!(no_mem.fix.unwrap().contains("+memory"));
        assert_eq!(check_cgroup_layout(&Mounts::default(), None).status, Status::Warn);
        let v1_only = Mounts { v1_memory: Some(Mount { root: "/".into(), mountpoint: "/cg/memory".into() }), v2: None };
        assert!(check_cgroup_layout(&v1_only, None).finding.starts_with("cgroup v1"));
    }

    #[test]
    fn memory_cgroup_row_reports_the_limit_and_warns_near_it() {
        let dir = "/sys/fs/cgroup/memory/demo";
        let cg = |limit: u64, usage: u64, ooms: u64| CgroupMemory {
            sample: sample(dir, Some(limit), usage, ooms),
            tightest: Some(Level { dir: dir.into(), limit: Some(limit), usage, reclaimable: 0 }),
        };
        let ok = check_memory_cgroup("pid 7 (sleep)", Some(&cg(64 << 20, 8 << 20, 0)));
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.finding.contains("limit 64.0 MiB, 8.00 MiB in use (12%)"), "{ok:?}");
        let near = check_memory_cgroup("pid 7 (sleep)", Some(&cg(64 << 20, 60 << 20, 0)));
        assert_eq!(near.status, Status::Warn);
        assert!(near.fix.unwrap().contains("memory.limit_in_bytes"));
        let killed = check_memory_cgroup("pid 7", Some(&cg(64 << 20, 8 << 20, 2)));
        assert_eq!(killed.status, Status::Warn);
        assert!(killed.finding.contains("2 OOM kills so far"), "{killed:?}");
        let unlimited = CgroupMemory { sample: sample(dir, None, 1 << 20, 0), tightest: None };
        let c = check_memory_cgroup("pid 7", Some(&unlimited));
        assert!(c.status == Status::Ok && c.finding.contains("no limit"), "{c:?}");
        assert_eq!(check_memory_cgroup("pid 7", None).status, Status::Info);
        // An ancestor's limit binds.
        let parent = CgroupMemory {
            sample: sample(dir, None, 1 << 20, 0),
            tightest: Some(Level { dir: "/sys/fs/cgroup/memory".into(), limit: Some(1 << 30), usage: 1 << 20, reclaimable: 0 }),
        };
        assert!(check_memory_cgroup("x", Some(&parent))
            .finding
            .contains("ancestor /sys/fs/cgroup/memory: limit 1.00 GiB"));
    }

    #[test]
    fn swap_and_memory_rows_from_meminfo_text() {
        let text = "MemTotal: 24684092 kB\nMemAvailable: 2000000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n";
        assert_eq!(parse_swap(text), Some((0, 0)));
        assert_eq!(parse_swap("SwapTotal: 1024 kB\nSwapFree: 512 kB\n"), Some((1 << 20, 512 << 10)));
        assert_eq!(parse_swap("MemTotal: 1 kB\n"), None);
        assert!(check_swap(Some((0, 0))).finding.starts_with("no swap"));
        assert_eq!(check_swap(Some((1 << 30, 1 << 29))).status, Status::Info);
        let (total, avail) = parse_meminfo(text).unwrap();
        let low = check_memory(total, avail, (Some(1.5), Some(0.25)));
        assert_eq!(low.status, Status::Warn, "{low:?}");
        assert!(low.finding.contains("some 1.50%, full 0.25%"));
        assert_eq!(check_memory(total, total / 2, (None, None)).status, Status::Ok);
    }

    #[test]
    fn a_gone_pid_is_a_fail_row_and_the_cgroup_row_is_skipped() {
        let row = check_pid(&Subject::Gone(999999)).unwrap();
        assert_eq!(row.status, Status::Fail);
        assert!(row.finding.contains("no process with pid 999999") && row.fix.unwrap().contains("ps -p 999999"));
        assert_eq!(check_pid(&Subject::Doctor(1)), None);
        let facts = Facts::gather(Some(u32::MAX - 1));
        let rows = facts.checks();
        let cg = rows.iter().find(|c| c.name == "memory_cgroup").unwrap();
        assert_eq!(cg.status, Status::Skipped);
        assert!(facts.cgroup.is_none());
    }

    #[test]
    fn this_process_has_memory_figures() {
        let f = Facts::gather(None);
        assert!(f.mem_total > 0 && f.mem_available <= f.mem_total, "{f:?}");
        assert!(matches!(f.subject, Subject::Doctor(p) if p == std::process::id()));
    }
}

//! The kernel: version, build options, BTF, tracefs, the tracepoints tracer attaches,
//! and whether kprobes exist (tracer never uses them).
use std::{collections::BTreeMap, path::Path};

use clap::ValueEnum as _;

use super::{Check, Status};
use crate::capture::{self, btf, format::Format, tracefs::Tracefs, ProbeGroup};

/// tracer's kernel programs use the BPF ring buffer (Linux 5.8).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Where tracefs is mounted when the distribution (or tracer) mounts it.
pub const TRACEFS_DIR: &str = "/sys/kernel/tracing";
const MOUNT_FIX: &str = "mount -t tracefs nodev /sys/kernel/tracing (tracer mounts it itself when root)";
const SUDO_FIX: &str = "run `sudo tracer doctor` to check it";

/// `6.18.44-fc-v657` -> (6, 18, 44); `6.8` -> (6, 8, 0).
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut nums = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = nums.next()?.parse().ok()?;
    let minor = nums.next()?.parse().ok()?;
    let patch = nums.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

pub fn check_kernel(release: &str) -> Check {
    let (maj, min) = MIN_KERNEL;
    match parse_release(release) {
        Some((a, b, _)) if (a, b) >= MIN_KERNEL => {
            Check::ok("kernel", format!("Linux {release} ({maj}.{min}+ needed for the BPF ring buffer)"))
        }
        Some(_) => Check::fail(
            "kernel",
            format!("Linux {release} is too old: tracer needs {maj}.{min}+ (BPF ring buffer)"),
            format!("boot a Linux {maj}.{min}+ kernel; `tracer report` still reads traces recorded elsewhere"),
        ),
        None => Check::warn(
            "kernel",
            format!("cannot read the kernel version from {release:?}"),
            format!("check `uname -r`: tracer needs Linux {maj}.{min}+"),
        ),
    }
}

/// A kernel's build options (`CONFIG_X=y`, `# CONFIG_X is not set`), by name without the
/// `CONFIG_` prefix; an unset option reads as `n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// The file it came from.
    pub source: String,
    pub options: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn parse(source: impl Into<String>, text: &str) -> KernelConfig {
        let mut options = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# CONFIG_") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    options.insert(name.to_string(), "n".to_string());
                }
            } else if let Some((name, value)) = line.strip_prefix("CONFIG_").and_then(|l| l.split_once('=')) {
                options.insert(name.to_string(), value.trim_matches('"').to_string());
            }
        }
        KernelConfig { source: source.into(), options }
    }

    /// `y` or `m`. An option a full config does not list is off (its dependencies are).
    pub fn enabled(&self, name: &str) -> bool {
        matches!(self.options.get(name).map(String::as_str), Some("y" | "m"))
    }
}

/// The running kernel's config: /boot/config-RELEASE, /proc/config.gz (through `gzip
/// -dc`), or the modules folder's copy. Err says where it looked.
pub fn read_config(release: &str) -> Result<KernelConfig, String> {
    let plain = [
        format!("/boot/config-{release}"),
        format!("/lib/modules/{release}/config"),
        format!("/usr/lib/modules/{release}/config"),
    ];
    for path in &plain {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(KernelConfig::parse(path.clone(), &text));
        }
    }
    let gz = "/proc/config.gz";
    if Path::new(gz).exists() {
        return match std::process::Command::new("gzip").args(["-dc", gz]).output() {
            Ok(out) if out.status.success() => Ok(KernelConfig::parse(gz, &String::from_utf8_lossy(&out.stdout))),
            Ok(out) => Err(format!("cannot decompress {gz}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => Err(format!("cannot decompress {gz} (gzip: {e})")),
        };
    }
    Err(format!("no kernel config in /boot/config-{release} or /proc/config.gz"))
}

/// Build options tracer depends on: (option, what happens without it, fails tracer).
const OPTIONS: &[(&str, &str, bool)] = &[
    ("BPF_SYSCALL", "no bpf(2): eBPF programs cannot be loaded", true),
    ("BPF_EVENTS", "eBPF programs cannot attach to tracepoints", true),
    ("TRACEPOINTS", "no tracepoints", true),
    ("FTRACE_SYSCALLS", "no syscalls:* tracepoints: mmap/munmap/brk/mremap not traced", false),
    ("DEBUG_INFO_BTF", "no BTF: exit codes fall back to the last fatal signal", false),
    ("MEMCG", "no memory cgroups: no limits to sample", false),
];

pub fn check_config(config: &Result<KernelConfig, String>) -> Check {
    let config = match config {
        Ok(c) => c,
        Err(why) => {
            return Check::info(
                "kernel_config",
                format!("{why}: options are judged by their effects in the rows below"),
            )
        }
    };
    let set: Vec<&str> = OPTIONS.iter().filter(|(o, ..)| config.enabled(o)).map(|(o, ..)| *o).collect();
    let unset: Vec<&(&str, &str, bool)> = OPTIONS.iter().filter(|(o, ..)| !config.enabled(o)).collect();
    if unset.is_empty() {
        return Check::ok("kernel_config", format!("{}: {} set", config.source, set.join(", ")));
    }
    let fatal = unset.iter().any(|(_, _, fatal)| *fatal);
    let missing: Vec<String> = unset.iter().map(|(o, why, _)| format!("CONFIG_{o} is off ({why})")).collect();
    let names: Vec<String> = unset.iter().map(|(o, ..)| format!("CONFIG_{o}=y")).collect();
    Check::new(
        "kernel_config",
        if fatal { Status::Fail } else { Status::Warn },
        format!("{}: {}", config.source, missing.join("; ")),
        Some(format!("a kernel built with {}", names.join(", "))),
    )
}

/// What /sys/kernel/btf/vmlinux gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Btf {
    Missing,
    Unreadable(String),
    /// `task_struct.exit_code`'s offset, when the blob has it.
    Present {
        exit_code_offset: Option<u32>,
        /// Names of the mm counters (`MM_FILEPAGES`...) were found.
        mm_counter_names: bool,
    },
}

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

impl Btf {
    pub fn read() -> Btf {
        match std::fs::read(BTF_PATH) {
            Ok(blob) => {
                Btf::Present {
                    exit_code_offset: btf::member_offset(&blob, "task_struct", "exit_code").ok().flatten(),
                    mm_counter_names: btf::enum_with(&blob, "MM_FILEPAGES").ok().flatten().is_some(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Btf::Missing,
            Err(e) => Btf::Unreadable(e.to_string()),
        }
    }
}

pub fn check_btf(btf: &Btf) -> Check {
    const FALLBACK: &str = "exit codes fall back to the last fatal signal";
    match btf {
        Btf::Present { exit_code_offset: Some(off), .. } => {
            Check::ok("btf", format!("{BTF_PATH}: task_struct.exit_code at byte {off}: exit codes are exact"))
        }
        Btf::Present { exit_code_offset: None, .. } => Check::warn(
            "btf",
            format!("{BTF_PATH} has no task_struct.exit_code: {FALLBACK}"),
            "nothing to do for tracing; exit codes come from the signal that ended the process",
        ),
        Btf::Missing => Check::warn(
            "btf",
            format!("no BTF at {BTF_PATH}: {FALLBACK}"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y for exact exit codes",
        ),
        Btf::Unreadable(why) => Check::warn(
            "btf",
            format!("cannot read {BTF_PATH} ({why}): {FALLBACK}"),
            "make /sys/kernel/btf/vmlinux readable (it is world-readable by default)",
        ),
    }
}

/// Where tracefs stands for this process.
#[derive(Clone, Debug)]
pub enum TracefsState {
    /// Mounted, and its `events` folder is readable here.
    Readable(Tracefs),
    /// Mounted (these mount points), but this process cannot look inside (not root).
    Unreadable(Vec<String>),
    /// Not mounted; `dir_exists`: the usual mount point is there to mount it on.
    NotMounted { dir_exists: bool },
    /// It was not mounted, and the doctor (root) mounted it, as tracer does when it runs.
    MountedHere(Tracefs),
}

impl TracefsState {
    /// [`TracefsState::read`], and as root, tracefs mounted where it is not, as tracer
    /// itself does: the tracepoint rows then say what tracer would find.
    pub fn read_or_mount(root: bool) -> TracefsState {
        match TracefsState::read() {
            TracefsState::NotMounted { dir_exists: true } if root => match Tracefs::locate_or_mount() {
                Ok(t) => TracefsState::MountedHere(t),
                Err(_) => TracefsState::NotMounted { dir_exists: true },
            },
            state => state,
        }
    }

    pub fn read() -> TracefsState {
        if let Some(t) = Tracefs::locate() {
            return TracefsState::Readable(t);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = tracefs_mounts(&mountinfo);
        if mounts.is_empty() {
            TracefsState::NotMounted { dir_exists: Path::new(TRACEFS_DIR).is_dir() }
        } else {
            TracefsState::Unreadable(mounts)
        }
    }
}

/// Mount points of tracefs in mountinfo text (`... mountpoint ... - tracefs ...`).
pub fn tracefs_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "tracefs").then(|| mountpoint.to_string())
        })
        .collect()
}

pub fn check_tracefs(state: &TracefsState, root: bool) -> Check {
    match state {
        TracefsState::Readable(t) => Check::ok("tracefs", format!("mounted at {}", t.root().display())),
        TracefsState::Unreadable(at) if !root => Check::skipped(
            "tracefs",
            format!("mounted at {}; what is inside is readable by root only: unknown without root", at.join(", ")),
            SUDO_FIX,
        ),
        TracefsState::Unreadable(at) => Check::fail(
            "tracefs",
            format!("mounted at {}, but root cannot read its events folder (a restricted container?)", at.join(", ")),
            "run tracer where tracefs is readable (on the host, or a container with /sys/kernel/tracing mounted)",
        ),
        TracefsState::MountedHere(t) => Check::info(
            "tracefs",
            format!("was not mounted: mounted it at {}, as tracer does itself when it runs as root", t.root().display()),
        ),
        TracefsState::NotMounted { dir_exists: true } if !root => Check::skipped(
            "tracefs",
            "not mounted: tracer mounts it itself when it runs as root; the tracepoints are unknown until then",
            SUDO_FIX,
        ),
        TracefsState::NotMounted { dir_exists: true } => Check::warn("tracefs", "tracefs is not mounted and could not be mounted", MOUNT_FIX),
        TracefsState::NotMounted { dir_exists: false } => Check::fail(
            "tracefs",
            format!("tracefs is not mounted and {TRACEFS_DIR} does not exist: this kernel has no tracing"),
            "boot a kernel built with CONFIG_FTRACE=y and CONFIG_TRACEPOINTS=y",
        ),
    }
}

/// One tracepoint as tracefs shows it.
#[derive(Clone, Debug)]
pub enum Tracepoint {
    Present(Format),
    Missing,
    /// There, but its format file could not be read or parsed.
    Unreadable(String),
}

/// What tracing loses without a tracepoint, and since when kernels have it.
fn impact(name: &str) -> (&'static str, &'static str) {
    match name {
        "sched_process_exit" => ("tracer cannot run: it follows the target through its exits", "needs Linux 3.x"),
        "task_newtask" => ("children and threads created later are not followed", "needs Linux 3.x"),
        "sched_process_exec" => ("exec calls are not seen", "needs Linux 3.4+"),
        "signal_generate" => ("signals and their senders are not traced", "needs Linux 3.2+"),
        "signal_deliver" => ("signal deliveries are not traced", "needs Linux 3.2+"),
        "mark_victim" => ("OOM kills show only as a SIGKILL", "needs Linux 4.13+"),
        "rss_stat" => ("RSS comes only from the samplers", "needs Linux 5.5+"),
        "tcp_send_reset" => ("resets not traced", "needs Linux 4.16+"),
        "tcp_receive_reset" => ("received resets not traced", "needs Linux 4.16+"),
        "inet_sock_set_state" => ("sockets are not attributed to the target", "needs Linux 4.16+"),
        n if n.starts_with("sys_") => {
            ("memory syscalls (mmap, munmap, brk, mremap) not traced", "needs CONFIG_FTRACE_SYSCALLS=y")
        }
        _ => ("its events are not traced", "needs a newer kernel"),
    }
}

/// Fields that arrived later than their tracepoint: (tracepoint, field, what it adds, since).
const LATE_FIELDS: &[(&str, &str, &str, &str)] = &[
    ("tcp_send_reset", "reason", "resets carry no reason (NO_SOCKET, TCP_ABORT_ON_CLOSE...)", "Linux 6.10"),
    ("mark_victim", "total_vm", "OOM kills carry no victim memory sizes", "Linux 6.8"),
];

/// How each part of the diagnosis gets its facts on this kernel: reported by the kernel
/// (`ok`), inferred by tracer from other events (`info`, saying how), or unknown until
/// tracefs can be read (`skipped`).
pub fn feature_checks(tracefs: &TracefsState, btf: &Btf) -> Vec<Check> {
    let t = match tracefs {
        TracefsState::Readable(t) | TracefsState::MountedHere(t) => t,
        _ => return Vec::new(),
    };
    let format = |category: &str, name: &str| t.format(category, name).ok();
    let mut rows = Vec::new();
    if let Some(f) = format("tcp", "tcp_send_reset") {
        rows.push(if f.field("reason").is_some() {
            Check::ok("feature.resets", "reported by the kernel: each reset with its reason, refused connects included")
        } else {
            Check::info(
                "feature.resets",
                "inferred: before Linux 6.10 resets carry no reason and a refused connect sends no traced reset; \
                 tracer infers refusals from the connecting socket (SYN_SENT -> CLOSE) and other causes from the owner's fate",
            )
        });
    }
    if let Some(f) = format("oom", "mark_victim") {
        rows.push(if f.field("anon_rss").is_some() {
            Check::ok("feature.oom_memory", "reported by the kernel: the victim's anon, file and shmem RSS at the kill")
        } else {
            Check::info(
                "feature.oom_memory",
                "inferred: this kernel's oom:mark_victim carries only the victim's pid; the memory at the kill comes from the last rss_stat counters or sample before it",
            )
        });
    }
    if let Some(f) = format("kmem", "rss_stat") {
        let named = !f.symbols("member").is_empty();
        rows.push(match (named, btf) {
            (true, _) => Check::ok("feature.rss_members", "named by the kernel (MM_ANONPAGES, MM_FILEPAGES...)"),
            (false, Btf::Present { mm_counter_names: true, .. }) => {
                Check::ok("feature.rss_members", "rss_stat prints numbers; tracer names them from BTF")
            }
            (false, _) => Check::info(
                "feature.rss_members",
                "rss_stat prints numbers and there is no BTF to name them: RSS members show as numbers",
            ),
        });
    }
    rows.push(match btf {
        Btf::Present { exit_code_offset: Some(_), .. } => {
            Check::ok("feature.exit_codes", "read from the task at its exit (task_struct.exit_code, by BTF)")
        }
        _ => Check::info("feature.exit_codes", "inferred: without BTF, how a process ended comes from the last fatal signal it got"),
    });
    let layouts = crate::capture::layouts::Layouts::read(t);
    if let Some(row) = check_record_reads(layouts.usual_layouts(), layouts.usual_layout_candidates()) {
        rows.push(row);
    }
    rows
}

/// Which hook feeds the rss probe ([`crate::capture::RssHook`]): the BTF tracepoint where
/// this kernel's BTF says where the per-CPU counters and a task's mm are, unless the
/// environment asks for the classic one. Decided as capture decides, without loading.
pub fn check_rss_hook(layout: &tracer_common::RssCounterLayout, task_mm_known: bool, asked_classic: bool) -> Check {
    use crate::capture::RSS_HOOK_ENV;
    const CLASSIC: &str = "classic tracepoint kmem:rss_stat";
    const COST: &str = "the kernel builds a record on every page fault";
    if asked_classic {
        return Check::info("feature.rss_hook", format!("{CLASSIC} ({RSS_HOOK_ENV}=classic): {COST}"));
    }
    if layout.is_complete() && task_mm_known {
        return Check::ok(
            "feature.rss_hook",
            format!(
                "BTF tracepoint rss_stat: no record built per page fault; the program reads the counters itself, and \
                 near its threshold sums their {} per-CPU parts as the classic record does, without the kernel's lock \
                 (the classic tracepoint if the kernel refuses the program; {RSS_HOOK_ENV}=classic forces it)",
                layout.cpus
            ),
        );
    }
    let why = if !task_mm_known {
        "no task_struct.mm in this kernel's BTF".to_string()
    } else if layout.cpus > tracer_common::RSS_MAX_CPUS {
        format!("{} possible CPUs, more than the program sums ({})", layout.cpus, tracer_common::RSS_MAX_CPUS)
    } else {
        "this kernel's BTF has no per-CPU rss counters (Linux before 6.2)".to_string()
    };
    Check::info("feature.rss_hook", format!("{CLASSIC} ({why}): {COST}"))
}

/// How the hot programs read their records: plain loads where the kernel lays them out
/// as compiled in ([`tracer_common::usual_layout`]), else a helper call per field. Of the
/// `present` groups only (a missing tracepoint has its own row); None when none is.
pub fn check_record_reads(usual: u32, present: u32) -> Option<Check> {
    use tracer_common::usual_layout as u;
    let groups = [(u::RSS, "rss_stat"), (u::SYSCALLS, "memory syscalls"), (u::SIGNALS, "signals"), (u::SOCK, "socket states")];
    let (plain, other): (Vec<_>, Vec<_>) =
        groups.iter().filter(|(bit, _)| present & bit != 0).partition(|(bit, _)| usual & bit != 0);
    if plain.is_empty() && other.is_empty() {
        return None;
    }
    let names = |v: &[&(u32, &str)]| v.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ");
    Some(if other.is_empty() {
        Check::ok("feature.record_reads", format!("plain loads for {} (layouts as compiled in): the cheapest reads", names(&plain)))
    } else {
        let plain = if plain.is_empty() { String::new() } else { format!("; plain loads for {}", names(&plain)) };
        Check::info(
            "feature.record_reads",
            format!(
                "a helper call per field for {} (this kernel lays the records out otherwise than compiled in): each such event costs more{plain}",
                names(&other)
            ),
        )
    })
}

pub fn group_name(group: ProbeGroup) -> String {
    group.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_else(|| format!("{group:?}"))
}

/// The row of one probe group (`tracepoints.tcp`) from the state of its tracepoints
/// (`category:name` labels).
pub fn check_group(group: ProbeGroup, tps: &[(String, Tracepoint)]) -> Check {
    let name = format!("tracepoints.{}", group_name(group));
    let mut status = Status::Ok;
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    let mut present = Vec::new();
    for (label, tp) in tps {
        let short = label.split_once(':').map_or(label.as_str(), |(_, n)| n);
        match tp {
            Tracepoint::Present(format) => {
                present.push(short.to_string());
                for &(tp_name, field, lost, since) in LATE_FIELDS {
                    if tp_name == short && format.field(field).is_none() {
                        status = status.max(Status::Info);
                        problems.push(format!("{label} has no `{field}` field: {lost}"));
                        fixes.push(format!("{since}+ adds `{field}`"));
                    }
                }
            }
            Tracepoint::Missing => {
                let (lost, needs) = impact(short);
                let fatal = short == "sched_process_exit";
                status = status.max(if fatal { Status::Fail } else { Status::Warn });
                problems.push(format!("tracepoint {label} missing: {lost}"));
                fixes.push(if fatal {
                    format!("{needs}: tracer cannot trace on this kernel")
                } else {
                    format!("{needs}; tracer runs without it (listed in missing_probes)")
                });
            }
            Tracepoint::Unreadable(why) => {
                status = status.max(Status::Warn);
                problems.push(format!("{label}: {why}"));
                fixes.push(format!("check {TRACEFS_DIR}/events/{}/format", label.replace(':', "/")));
            }
        }
    }
    let finding = if problems.is_empty() {
        format!("{} present", present.join(", "))
    } else if present.is_empty() {
        problems.join("; ")
    } else {
        format!("{}; present: {}", problems.join("; "), present.join(", "))
    };
    let fix = (!fixes.is_empty()).then(|| {
        fixes.dedup();
        fixes.join("; ")
    });
    Check::new(name, status, finding, fix)
}

/// Rows for every probe group, reading the tracepoints through `tracefs` when it is
/// readable; `skipped` otherwise.
pub fn tracepoint_checks(state: &TracefsState, root: bool) -> Vec<Check> {
    ProbeGroup::ALL
        .iter()
        .map(|&group| {
            let name = format!("tracepoints.{}", group_name(group));
            match state {
                TracefsState::Readable(t) | TracefsState::MountedHere(t) => {
                    let tps: Vec<(String, Tracepoint)> = capture::tracepoints()
                        .filter(|&(_, _, g)| g == group)
                        .map(|(cat, tp, _)| (format!("{cat}:{tp}"), read_tracepoint(t, cat, tp)))
                        .collect();
                    check_group(group, &tps)
                }
                TracefsState::Unreadable(_) if !root => {
                    Check::skipped(name, "unknown without root: tracefs is readable by root only", SUDO_FIX)
                }
                TracefsState::Unreadable(_) => Check::skipped(name, "tracefs is not readable", "see the tracefs row"),
                TracefsState::NotMounted { .. } if !root => {
                    Check::skipped(name, "unknown until tracefs is mounted (tracer mounts it as root)", SUDO_FIX)
                }
                TracefsState::NotMounted { .. } => Check::skipped(name, "unknown: tracefs is not mounted", MOUNT_FIX),
            }
        })
        .collect()
}

fn read_tracepoint(t: &Tracefs, category: &str, name: &str) -> Tracepoint {
    if !t.exists(category, name) {
        return Tracepoint::Missing;
    }
    match t.format(category, name) {
        Ok(f) => Tracepoint::Present(f),
        Err(e) => Tracepoint::Unreadable(e.to_string()),
    }
}

/// Whether kernel symbol `name` is in /proc/kallsyms text (`addr type name [module]`);
/// the names are there for every user, only the addresses are hidden.
pub fn kallsyms_has(kallsyms: &str, name: &str) -> bool {
    kallsyms.lines().any(|l| l.split_whitespace().nth(2) == Some(name))
}

/// Whether the kernel has kprobes, and how that is known: `/sys/kernel/debug/kprobes`,
/// else CONFIG_KPROBES, else `register_kprobe` in /proc/kallsyms.
pub fn kprobes_present(
    debugfs_kprobes: bool,
    config: Option<&KernelConfig>,
    kallsyms: impl FnOnce() -> Option<String>,
) -> (Option<bool>, &'static str) {
    if debugfs_kprobes {
        return (Some(true), "/sys/kernel/debug/kprobes");
    }
    if let Some(c) = config {
        return (Some(c.enabled("KPROBES")), "CONFIG_KPROBES");
    }
    match kallsyms() {
        Some(text) if !text.is_empty() => (Some(kallsyms_has(&text, "register_kprobe")), "/proc/kallsyms"),
        _ => (None, "no kernel config, debugfs or /proc/kallsyms to tell"),
    }
}

/// Always `info`: tracer uses tracepoints only.
pub fn check_kprobes(present: Option<bool>, source: &str) -> Check {
    let finding = match present {
        Some(true) => format!("available (from {source}); not needed: tracer uses tracepoints only"),
        Some(false) => format!("not available (from {source}); not needed: tracer uses tracepoints only"),
        None => format!("unknown ({source}); not needed: tracer uses tracepoints only"),
    };
    Check::info("kprobes", finding)
}

/// What the kernel rows are decided from.
pub struct Facts {
    pub release: String,
    pub version: Option<(u32, u32, u32)>,
    pub config: Result<KernelConfig, String>,
    pub btf: Btf,
    pub tracefs: TracefsState,
    pub kprobes: (Option<bool>, &'static str),
}

impl Facts {
    pub fn gather(root: bool) -> Facts {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let config = read_config(&release);
        let kprobes = kprobes_present(Path::new("/sys/kernel/debug/kprobes").is_dir(), config.as_ref().ok(), || {
            std::fs::read_to_string("/proc/kallsyms").ok()
        });
        Facts {
            version: parse_release(&release),
            release,
            config,
            btf: Btf::read(),
            tracefs: TracefsState::read_or_mount(root),
            kprobes,
        }
    }

    pub fn checks(&self, root: bool) -> Vec<Check> {
        let mut checks = vec![
            check_kernel(&self.release),
            check_config(&self.config),
            check_btf(&self.btf),
            check_tracefs(&self.tracefs, root),
        ];
        checks.extend(tracepoint_checks(&self.tracefs, root));
        checks.extend(feature_checks(&self.tracefs, &self.btf));
        if matches!(self.btf, Btf::Present { .. }) {
            let asked = std::env::var(crate::capture::RSS_HOOK_ENV).is_ok_and(|v| v == "classic");
            let structs = crate::capture::btf::running_kernel_structs();
            let task_mm = crate::capture::btf::kernel_offsets(structs.as_ref())[tracer_common::kfield::TASK_MM] != u32::MAX;
            checks.push(check_rss_hook(&crate::capture::btf::rss_counter_layout(structs.as_ref()), task_mm, asked));
        }
        checks.push(check_kprobes(self.kprobes.0, self.kprobes.1));
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_BPF=y
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_EVENTS=y
CONFIG_TRACEPOINTS=y
CONFIG_FTRACE_SYSCALLS=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_MEMCG=y
# CONFIG_KPROBES is not set
CONFIG_HAVE_KPROBES=y
CONFIG_LOCALVERSION=\"-fc\"
";

    fn fmt(text: &str) -> Tracepoint {
        Tracepoint::Present(Format::parse(text).unwrap())
    }

    #[test]
    fn rss_hook_row_says_which_hook_and_why() {
        let mut layout = tracer_common::RssCounterLayout {
            mm_rss_stat: 1000,
            counter_size: 40,
            counter_count: 8,
            counter_counters: 32,
            array_pptrs: 320,
            cpus: 2,
            page_shift: 12,
            _pad: 0,
            slack_bytes: 64 * 4096,
        };
        let btf = check_rss_hook(&layout, true, false);
        assert_eq!(btf.status, Status::Ok);
        assert!(btf.finding.starts_with("BTF tracepoint rss_stat") && btf.finding.contains("their 2 per-CPU parts"), "{}", btf.finding);
        let asked = check_rss_hook(&layout, true, true);
        assert_eq!(asked.status, Status::Info);
        assert!(asked.finding.contains("TRACER_RSS_HOOK=classic"), "{}", asked.finding);
        assert!(check_rss_hook(&layout, false, false).finding.contains("no task_struct.mm"));
        layout.cpus = 512;
        assert!(check_rss_hook(&layout, true, false).finding.contains("512 possible CPUs, more than the program sums (256)"));
        layout.cpus = 2;
        layout.mm_rss_stat = u32::MAX;
        assert!(check_rss_hook(&layout, true, false).finding.contains("no per-CPU rss counters (Linux before 6.2)"));
    }

    #[test]
    fn record_reads_name_what_falls_back() {
        use tracer_common::usual_layout as u;
        let every = u::RSS | u::SYSCALLS | u::SIGNALS | u::SOCK;
        let all = check_record_reads(every, every).unwrap();
        assert_eq!(all.status, Status::Ok);
        assert!(all.finding.contains("rss_stat, memory syscalls, signals, socket states"), "{}", all.finding);
        let some = check_record_reads(u::SYSCALLS | u::SOCK, every).unwrap();
        assert_eq!(some.status, Status::Info);
        assert!(some.finding.starts_with("a helper call per field for rss_stat, signals"), "{}", some.finding);
        assert!(some.finding.ends_with("plain loads for memory syscalls, socket states"), "{}", some.finding);
        // A group whose tracepoints are missing is not named (its tracepoints row is).
        let no_signals = check_record_reads(u::RSS, u::RSS | u::SIGNALS).unwrap();
        assert!(no_signals.finding.starts_with("a helper call per field for signals ("), "{}", no_signals.finding);
        assert!(check_record_reads(0, 0).is_none());
    }

    #[test]
    fn releases_parse_with_any_suffix() {
        assert_eq!(parse_release("6.18.44-fc-v657\n"), Some((6, 18, 44)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15, 0)));
        assert_eq!(parse_release("6.8"), Some((6, 8, 0)));
        assert_eq!(parse_release("4.19.0+"), Some((4, 19, 0)));
        assert_eq!(parse_release(""), None);
        assert_eq!(parse_release("linux"), None);
    }

    #[test]
    fn kernel_row_fails_below_5_8() {
        assert_eq!(check_kernel("6.18.44-fc").status, Status::Ok);
        assert_eq!(check_kernel("5.8.0").status, Status::Ok);
        let old = check_kernel("5.4.0-150-generic");
        assert_eq!(old.status, Status::Fail);
        assert!(old.finding.contains("5.8+") && old.fix.is_some(), "{old:?}");
        assert_eq!(check_kernel("").status, Status::Warn);
    }

    #[test]
    fn config_text_parses_set_unset_and_quoted_values() {
        let c = KernelConfig::parse("/proc/config.gz", CONFIG);
        assert!(c.enabled("BPF_SYSCALL") && c.enabled("DEBUG_INFO_BTF"));
        assert!(!c.enabled("KPROBES"));
        assert_eq!(c.options.get("KPROBES").map(String::as_str), Some("n"));
        assert_eq!(c.options.get("LOCALVERSION").map(String::as_str), Some("-fc"));
        // Not listed at all: off.
        assert!(!c.enabled("BPF_LSM"));
        let m = KernelConfig::parse("x", "CONFIG_MEMCG=m\n");
        assert!(m.enabled("MEMCG"));
    }

    #[test]
    fn config_row_ok_when_all_set_warn_without_btf_fail_without_bpf_events() {
        let ok = check_config(&Ok(KernelConfig::parse("/proc/config.gz", CONFIG)));
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert!(ok.finding.contains("BPF_EVENTS") && ok.fix.is_none());

        let no_btf = CONFIG.replace("CONFIG_DEBUG_INFO_BTF=y", "# CONFIG_DEBUG_INFO_BTF is not set");
        let warn = check_config(&Ok(KernelConfig::parse("/boot/config-x", &no_btf)));
        assert_eq!(warn.status, Status::Warn);
        assert!(warn.finding.contains("exit codes fall back"), "{warn:?}");
        assert!(warn.fix.unwrap().contains("CONFIG_DEBUG_INFO_BTF=y"));

        let no_events = CONFIG.replace("CONFIG_BPF_EVENTS=y\n", "");
        let fail = check_config(&Ok(KernelConfig::parse("/boot/config-x", &no_events)));
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.finding.contains("CONFIG_BPF_EVENTS is off"), "{fail:?}");

        let none = check_config(&Err("no kernel config in /boot/config-6.1 or /proc/config.gz".into()));
        assert_eq!(none.status, Status::Info);
    }

    #[test]
    fn btf_row_ok_with_exit_code_warn_otherwise_with_the_fallback_named() {
        assert_eq!(check_btf(&Btf::Present { exit_code_offset: Some(2540), mm_counter_names: true }).status, Status::Ok);
        let missing = check_btf(&Btf::Missing);
        assert_eq!(missing.status, Status::Warn);
        assert_eq!(missing.finding, "no BTF at /sys/kernel/btf/vmlinux: exit codes fall back to the last fatal signal");
        assert_eq!(check_btf(&Btf::Present { exit_code_offset: None, mm_counter_names: false }).status, Status::Warn);
        assert_eq!(check_btf(&Btf::Unreadable("Permission denied".into())).status, Status::Warn);
    }

    #[test]
    fn tracefs_mounts_come_from_mountinfo() {
        let mi = "\
22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw
40 22 0:12 / /sys/kernel/tracing rw,relatime - tracefs nodev rw
41 22 0:7 / /sys/kernel/debug rw,relatime - debugfs debugfs rw
";
        assert_eq!(tracefs_mounts(mi), vec!["/sys/kernel/tracing".to_string()]);
        assert!(tracefs_mounts("22 1 0:20 / /sys rw - sysfs sysfs rw\n").is_empty());
    }

    #[test]
    fn tracefs_row_says_what_root_would_add_and_how_to_mount() {
        let unreadable = TracefsState::Unreadable(vec!["/sys/kernel/tracing".into()]);
        let c = check_tracefs(&unreadable, false);
        assert_eq!(c.status, Status::Skipped);
        assert!(c.finding.contains("unknown without root"), "{c:?}");
        assert_eq!(check_tracefs(&unreadable, true).status, Status::Fail);
        let unmounted = check_tracefs(&TracefsState::NotMounted { dir_exists: true }, true);
        assert_eq!(unmounted.status, Status::Warn, "root could not mount it");
        assert_eq!(unmounted.fix.as_deref(), Some(MOUNT_FIX));
        // Issue 13: not mounted is no problem for tracer, which mounts it as root.
        let as_user = check_tracefs(&TracefsState::NotMounted { dir_exists: true }, false);
        assert_eq!(as_user.status, Status::Skipped);
        assert!(as_user.finding.contains("tracer mounts it itself"), "{as_user:?}");
        let mounted = check_tracefs(&TracefsState::MountedHere(Tracefs::at("/sys/kernel/tracing")), true);
        assert_eq!(mounted.status, Status::Info);
        assert!(mounted.finding.contains("as tracer does itself"), "{mounted:?}");
        assert_eq!(check_tracefs(&TracefsState::NotMounted { dir_exists: false }, true).status, Status::Fail);
        // The tracepoint rows follow: skipped, never failed, when tracefs is out of reach.
        for c in tracepoint_checks(&unreadable, false) {
            assert_eq!(c.status, Status::Skipped, "{c:?}");
            assert!(c.finding.contains("unknown without root"));
        }
        let rows = tracepoint_checks(&TracefsState::NotMounted { dir_exists: true }, true);
        assert_eq!(rows.len(), ProbeGroup::ALL.len());
        assert!(rows.iter().all(|c| c.status == Status::Skipped && c.fix.as_deref() == Some(MOUNT_FIX)));
    }

    #[test]
    fn tcp_group_on_6_18_is_ok_and_on_5_15_lacks_reset_reasons() {
        let new = [
            ("tcp:tcp_send_reset".to_string(), fmt(include_str!("../capture/testdata/6.18/tcp_send_reset"))),
            ("tcp:tcp_receive_reset".to_string(), fmt(include_str!("../capture/testdata/6.18/tcp_receive_reset"))),
            ("sock:inet_sock_set_state".to_string(), fmt(include_str!("../capture/testdata/6.18/inet_sock_set_state"))),
        ];
        let c = check_group(ProbeGroup::Tcp, &new);
        assert_eq!((c.name.as_str(), c.status), ("tracepoints.tcp", Status::Ok), "{c:?}");
        assert_eq!(c.finding, "tcp_send_reset, tcp_receive_reset, inet_sock_set_state present");

        let mut old = new.clone();
        old[0].1 = fmt(include_str!("../capture/testdata/5.15/tcp_send_reset"));
        let c = check_group(ProbeGroup::Tcp, &old);
        assert_eq!(c.status, Status::Info, "{c:?}");
        assert!(c.finding.contains("no `reason` field"), "{c:?}");
        assert!(c.fix.unwrap().contains("6.10"));
    }

    #[test]
    fn a_missing_tracepoint_warns_with_what_is_lost_and_the_kernel_that_has_it() {
        let tps = [
            ("tcp:tcp_send_reset".to_string(), Tracepoint::Missing),
            ("tcp:tcp_receive_reset".to_string(), fmt(include_str!("../capture/testdata/6.18/tcp_receive_reset"))),
        ];
        let c = check_group(ProbeGroup::Tcp, &tps);
        assert_eq!(c.status, Status::Warn);
        assert!(c.finding.starts_with("tracepoint tcp:tcp_send_reset missing: resets not traced"), "{c:?}");
        assert!(c.fix.unwrap().contains("needs Linux 4.16+"));
        let mmap = [("syscalls:sys_enter_mmap".to_string(), Tracepoint::Missing)];
        assert!(check_group(ProbeGroup::Mmap, &mmap).fix.unwrap().contains("CONFIG_FTRACE_SYSCALLS"));
        let oom = [("oom:mark_victim".to_string(), fmt(include_str!("../capture/testdata/5.15/mark_victim")))];
        assert_eq!(check_group(ProbeGroup::Oom, &oom).status, Status::Info);
    }

    #[test]
    fn without_sched_process_exit_tracing_fails() {
        let tps = [
            ("task:task_newtask".to_string(), fmt(include_str!("../capture/testdata/6.18/task_newtask"))),
            ("sched:sched_process_exit".to_string(), Tracepoint::Missing),
        ];
        let c = check_group(ProbeGroup::Process, &tps);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let c = check_group(
            ProbeGroup::Process,
            &[("sched:sched_process_exec".into(), Tracepoint::Unreadable("bad".into()))],
        );
        assert_eq!(c.status, Status::Warn);
    }

    #[test]
    fn every_group_has_tracepoints_in_the_capture_list() {
        for g in ProbeGroup::ALL {
            assert!(capture::tracepoints().any(|(_, _, group)| group == g), "{g:?}");
        }
        assert_eq!(group_name(ProbeGroup::Tcp), "tcp");
    }

    #[test]
    fn kprobes_from_debugfs_then_config_then_kallsyms() {
        let cfg = KernelConfig::parse("c", CONFIG);
        assert_eq!(kprobes_present(true, Some(&cfg), || None), (Some(true), "/sys/kernel/debug/kprobes"));
        assert_eq!(kprobes_present(false, Some(&cfg), || panic!("not read")).0, Some(false));
        let with = "0000000000000000 T register_kprobe\n0000000000000000 t foo [mod]\n";
        let without = "0000000000000000 T bpf_get_func_ip_kprobe\n";
        assert_eq!(kprobes_present(false, None, || Some(with.into())).0, Some(true));
        assert_eq!(kprobes_present(false, None, || Some(without.into())).0, Some(false));
        assert_eq!(kprobes_present(false, None, || None).0, None);
        let c = check_kprobes(Some(false), "CONFIG_KPROBES");
        assert_eq!(c.status, Status::Info);
        assert!(c.finding.starts_with("not available") && c.finding.contains("tracepoints only"));
        assert!(check_kprobes(Some(true), "x").finding.starts_with("available"));
    }

    /// A tracefs folder holding these tracepoints' stored formats.
    fn fake_tracefs(kernel: &str, tps: &[(&str, &str)]) -> (tempfile::TempDir, TracefsState) {
        let dir = tempfile::tempdir().unwrap();
        for (category, name) in tps {
            let at = dir.path().join("events").join(category).join(name);
            std::fs::create_dir_all(&at).unwrap();
            let text = std::fs::read_to_string(format!("{}/src/capture/testdata/{kernel}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            std::fs::write(at.join("format"), text).unwrap();
        }
        let state = TracefsState::Readable(Tracefs::at(dir.path()));
        (dir, state)
    }

    #[test]
    fn feature_rows_say_what_the_kernel_reports_and_what_tracer_infers() {
        let btf = Btf::Present { exit_code_offset: Some(2540), mm_counter_names: true };
        let mut tps = vec![("tcp", "tcp_send_reset"), ("oom", "mark_victim"), ("kmem", "rss_stat")];
        tps.extend([("signal", "signal_generate"), ("signal", "signal_deliver"), ("sock", "inet_sock_set_state")]);
        for call in ["mmap", "munmap", "brk", "mremap"] {
            tps.push(("syscalls", format!("sys_enter_{call}").leak()));
            tps.push(("syscalls", format!("sys_exit_{call}").leak()));
        }
        let (_d, new) = fake_tracefs("6.18", &tps);
        let rows = feature_checks(&new, &btf);
        let names: Vec<&str> = rows.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["feature.resets", "feature.oom_memory", "feature.rss_members", "feature.exit_codes", "feature.record_reads"]);
        assert!(rows.iter().all(|c| c.status == Status::Ok), "{rows:#?}");
        let (_d, old) = fake_tracefs("5.15", &[("tcp", "tcp_send_reset"), ("oom", "mark_victim")]);
        let rows = feature_checks(&old, &Btf::Missing);
        let by = |n: &str| rows.iter().find(|c| c.name == n).unwrap();
        assert_eq!(by("feature.resets").status, Status::Info);
        assert!(by("feature.resets").finding.contains("SYN_SENT -> CLOSE"), "{:?}", by("feature.resets"));
        assert_eq!(by("feature.oom_memory").status, Status::Info);
        assert!(by("feature.oom_memory").finding.contains("last rss_stat counters or sample"));
        assert_eq!(by("feature.exit_codes").status, Status::Info);
        // Neither kmem, signal, sock nor syscall tracepoints there: nothing to say of reads.
        assert!(rows.iter().all(|c| c.name != "feature.record_reads"), "{rows:#?}");
        assert!(feature_checks(&TracefsState::NotMounted { dir_exists: true }, &btf).is_empty());
    }
}

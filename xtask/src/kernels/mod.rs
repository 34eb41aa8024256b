//! `cargo xtask test` (after the suite; `--kernels-only` alone, `--no-kernels` not): the
//! end-to-end scenarios booted on
//! the kernels users run, Debian 11 (5.10), 12 (6.1) and 13 (6.12) with cgroup v2 only,
//! under QEMU with software emulation, and their verdict causes compared with this
//! host's, scenario by scenario.
//!
//! - `fetch`: the kernels, downloaded once into a cache outside the clone.
//! - `initramfs`: busybox, the release `tracer` and `tracer-stress` with their
//!   libraries, and `guest.sh` as `/init`.
//! - `qemu`: the boot, the serial console and its marked sections.
//! - `host`: the same scenarios on this host (the reference).
//! - `matrix`: the comparison and its table, also written to bench/results/kernels.md.
//!
//! Evidence (consoles, traces, reports) is left in target/kernels/.
mod fetch;
mod host;
mod initramfs;
mod matrix;
mod qemu;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::exec::{command, exec, output, workspace_root};
use fetch::{Distro, Fetched, Kernel, DISTROS};
use matrix::{Row, Skipped};

#[derive(Args)]
#[group(id = "kernel_matrix")]
#[command(next_help_heading = "Kernel matrix")]
pub struct Options {
    /// Skip the kernel matrix that runs after the suite
    ///
    /// After the suite, `cargo xtask test` boots Debian 11 (5.10), 12 (6.1) and 13 (6.12)
    /// kernels under QEMU (software emulation, cgroup v2 only), runs the same end-to-end
    /// scenarios in each and on this host, and fails when a kernel's verdict causes differ
    /// from the host's. Writes bench/results/kernels.md; consoles, traces and reports in
    /// target/kernels/. Root; the kernels are downloaded once into the kernel cache, and a
    /// kernel that cannot be had is skipped loudly.
    #[arg(long)]
    pub no_kernels: bool,
    /// Only the kernel matrix, not the suite
    #[arg(long)]
    pub kernels_only: bool,
    /// Kernel matrix: only these kernels, comma separated [default: all]
    #[arg(long = "kernel", value_enum, value_delimiter = ',', value_name = "KERNEL")]
    pub kernel: Vec<KernelName>,
    /// Kernel matrix: where the kernels are cached [default: $TRACER_KERNEL_CACHE, else
    /// /var/cache/tracer-kernels]
    #[arg(long, value_name = "DIR")]
    pub kernel_cache: Option<PathBuf>,
    /// Kernel matrix: ask Debian's archive for newer kernels even when some are cached
    #[arg(long)]
    pub refresh_kernels: bool,
    /// Kernel matrix: the most one kernel's boot and scenarios may take, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub kernel_timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelName {
    /// Debian 11 bullseye, Linux 5.10
    Debian11,
    /// Debian 12 bookworm, Linux 6.1
    Debian12,
    /// Debian 13 trixie, Linux 6.12
    Debian13,
}

impl KernelName {
    fn key(self) -> &'static str {
        match self {
            KernelName::Debian11 => "debian11",
            KernelName::Debian12 => "debian12",
            KernelName::Debian13 => "debian13",
        }
    }
}

/// The scenarios of the matrix, each a small case of tests/tests/diagnose.rs run the same
/// way on the host (host.rs) and in the guest (guest.sh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Oom,
    Signal,
    Refused,
    Abort,
    KilledWithClients,
    MmapFile,
}

impl Scenario {
    pub const ALL: [Scenario; 6] =
        [Scenario::Oom, Scenario::Signal, Scenario::Refused, Scenario::Abort, Scenario::KilledWithClients, Scenario::MmapFile];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Oom => "oom",
            Scenario::Signal => "signal",
            Scenario::Refused => "refused",
            Scenario::Abort => "abort",
            Scenario::KilledWithClients => "killed_with_clients",
            Scenario::MmapFile => "mmap_file",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for the results file.
    pub fn what(self) -> &'static str {
        match self {
            Scenario::Oom => "`tracer-stress alloc --cgroup CG` in a 64 MiB memory cgroup until the OOM killer ends it",
            Scenario::Signal => "`tracer-stress ignore-term`, SIGKILLed by `kill -9` once it printed `ready`",
            Scenario::Refused => "`sh -c 'exec tracer-stress connect 9'`: nothing listens on 127.0.0.1:9",
            Scenario::Abort => "`tracer-stress serve-unread`; a client sends a request the server closes unread",
            Scenario::KilledWithClients => {
                "`tracer-stress serve-idle 2`, two idle clients, SIGKILL of the server; the clients then write, one more connect"
            }
            Scenario::MmapFile => "`tracer-stress mmap-file F` of a 16 MiB file",
        }
    }
}

/// The verdicts of one scenario's report, as the matrix sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    /// The `cause` of each verdict: what is compared with the host.
    pub causes: BTreeSet<String>,
    /// The resets the verdicts explain, summed: shown and noted, not compared (how many
    /// resets a kernel lets the tracer see differs by version).
    pub resets: u64,
    /// Facts the kernel programs read themselves, compared like the causes: the mapped
    /// file named at the mmap (its name, bytes and size) and the program the target
    /// exec'd, where the scenario has them.
    pub facts: BTreeSet<String>,
}

/// The verdicts, or why there are none to compare.
pub type Observed = std::result::Result<Verdicts, String>;

/// The verdicts of `tracer report --format json`.
pub fn verdicts_of_report(json: &str) -> Result<Verdicts> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).context("the report is not JSON")?;
    let verdicts = v.get("verdicts").and_then(|v| v.as_array()).context("the report has no `verdicts` list")?;
    let mut out = Verdicts::default();
    for v in verdicts {
        out.causes.insert(v.get("cause").and_then(|c| c.as_str()).context("a verdict without `cause`")?.to_string());
        out.resets += v.get("resets").and_then(|r| r.as_u64()).unwrap_or(0);
    }
    // The checkpoint the mmap_file scenario maps: named by the kernel, with its size.
    for f in v.pointer("/memory/file_mappings").and_then(|f| f.as_array()).into_iter().flatten() {
        let path = f.get("path").and_then(|p| p.as_str()).unwrap_or("");
        if path.rsplit('/').next() == Some("model.bin") {
            let mib = |key: &str| f.get(key).and_then(|b| b.as_u64()).map_or("?".into(), |b| format!("{} MiB", b >> 20));
            out.facts.insert(format!("mapped {} of model.bin, a {} file", mib("bytes"), mib("size")));
        }
    }
    // The program, as its exec's arguments say (`tracer run` starts it through `sh -c`).
    if let Some(program) = v.pointer("/target/program").and_then(|p| p.as_str()) {
        let mut words = program.split(' ');
        let first = words.next().unwrap_or("").rsplit('/').next().unwrap_or("");
        out.facts.insert(format!("ran {first} {}", words.next().unwrap_or("")).trim_end().to_string());
    }
    Ok(out)
}

/// Called by `cargo xtask test` with the suite's result: runs the matrix when asked, and
/// reports both failures when both fail.
pub fn after_suite(opts: &Options, suite: Result<()>, built: bool) -> Result<()> {
    if opts.no_kernels {
        return suite;
    }
    if !crate::privilege::is_root() {
        eprintln!("\nxtask: SKIPPED the kernel matrix: it loads eBPF programs and boots kernels as root\n");
        return suite;
    }
    if let Err(e) = &suite {
        eprintln!("xtask: the suite failed ({e:#}); running the kernel matrix all the same");
    }
    let matrix = run(opts, built);
    match (suite, matrix) {
        (Ok(()), m) => m,
        (Err(s), Ok(())) => Err(s),
        (Err(s), Err(m)) => bail!("{s:#}\nand the kernel matrix failed: {m:#}"),
    }
}


/// QEMU, busybox and the packaging tools; installed from the system's own sources when
/// missing (we are root by then).
fn ensure_tools() -> Result<()> {
    let have = |p: &str| output(command("sh").arg("-c").arg(format!("command -v {p}"))).is_some();
    let mut missing = Vec::new();
    if !have(qemu::QEMU) {
        missing.push("qemu-system-x86");
    }
    if initramfs::busybox().is_err() {
        missing.push("busybox-static");
    }
    for (tool, pkg) in [("gzip", "gzip"), ("dpkg-deb", "dpkg"), ("tar", "tar"), ("ldd", "libc-bin"), ("apt-get", "apt")] {
        if !have(tool) {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: kernels: installing {}", missing.join(" "));
    // A new machine may have no package lists yet.
    let _ = exec(command("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"));
    exec(command("apt-get").args(["install", "-y", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
        .map_err(|e| anyhow::anyhow!("{e:#}: the kernel matrix needs {}; install them with `apt-get install {}`", missing.join(", "), missing.join(" ")))
}

/// The guest's result for `s` from its console.
fn guest_observed(console: &qemu::Console, s: Scenario, boot: &qemu::Boot) -> Observed {
    let name = s.name();
    let tail = |section: &str| {
        let body = console.sections.get(section).map(|x| x.body.trim().to_string()).unwrap_or_default();
        let lines: Vec<&str> = body.lines().collect();
        lines[lines.len().saturating_sub(4)..].join(" / ")
    };
    let Some(run) = console.sections.get(name) else {
        return Err(if boot.timed_out {
            "not run: the guest timed out before it".into()
        } else {
            "not run: the guest stopped before it".into()
        });
    };
    let report = console.sections.get(&format!("{name}.report")).filter(|r| r.ended && !r.body.trim().is_empty());
    match report {
        Some(r) => verdicts_of_report(&r.body).map_err(|e| format!("{e:#}: {}", tail(&format!("{name}.report")))),
        None if !run.ended => Err(format!(
            "cut short: the guest {} during it; its last lines: {}",
            if boot.timed_out { "timed out" } else { "stopped" },
            tail(name)
        )),
        None => Err(format!(
            "no report (tracer exit {}); tracer said: {}",
            run.rc.map_or("?".into(), |r| r.to_string()),
            tail(&format!("{name}.log"))
        )),
    }
}

/// Which hook the rss probe was on in a kernel's oom scenario, from its trace's
/// `trace_start`: `rss probe on kmem:rss_stat (BTF)`.
fn rss_hook(dir: &Path) -> String {
    let first = std::fs::read_to_string(dir.join("oom.jsonl")).ok().and_then(|t| t.lines().next().map(str::to_string));
    let probes = first.and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok()).map(|v| v["probes"].clone());
    let hook = probes
        .as_ref()
        .and_then(|p| p.as_array())
        .and_then(|p| p.iter().filter_map(|x| x.as_str()).find(|x| x.contains("rss_stat")).map(str::to_string));
    match hook {
        Some(h) => format!("rss probe on {h}"),
        None => "rss probe: no trace_start in its oom trace".into(),
    }
}

/// The file a console section is kept in: `oom.report` as `oom.report.json`.
fn section_file(name: &str) -> String {
    if name.ends_with(".report") {
        format!("{name}.json")
    } else if name.ends_with(".jsonl") {
        name.to_string()
    } else {
        format!("{name}.txt")
    }
}

/// How many times a kernel is booted when its guest kernel crashes (an oops, a panic, or
/// a lockup its watchdog reports; not a timeout or a failed scenario). Software emulation
/// of two CPUs has been seen to crash a guest, and to hang both its CPUs, while
/// tracepoints were being switched on (code patched on one vCPU while the other runs it);
/// a second crash in a row fails the kernel.
const BOOTS_ON_CRASH: usize = 2;

/// The console from the guest kernel's first oops or panic line, at most 40 lines.
fn oops_excerpt(console: &str) -> Option<String> {
    const STARTS: [&str; 8] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "invalid opcode",
        "kernel BUG at",
        "Unable to handle",
        "RIP:",
        "Kernel panic",
    ];
    let lines: Vec<&str> = console.lines().collect();
    let first = lines.iter().position(|l| STARTS.iter().any(|m| l.contains(m)))?;
    Some(lines[first..lines.len().min(first + 40)].join("\n"))
}

fn boot_kernel(k: &Kernel, initrd: &Path, timeout: Duration, out: &Path) -> Result<Row> {
    let dir = out.join(k.distro.key);
    std::fs::create_dir_all(&dir)?;
    let label = format!("{} {}", k.distro.label, k.release);
    let mut crashes = Vec::new();
    loop {
        let b = qemu::boot(&label, &k.vmlinuz, initrd, timeout, &dir.join("console.log"))?;
        let console = qemu::parse_console(&b.console);
        let crash = if b.timed_out || console.done { None } else { oops_excerpt(&b.console) };
        if let Some(oops) = crash.filter(|_| crashes.len() + 1 < BOOTS_ON_CRASH) {
            let kept = dir.join(format!("console.crash{}.log", crashes.len() + 1));
            let _ = std::fs::rename(dir.join("console.log"), &kept);
            eprintln!(
                "xtask: kernels: {label}: WARNING: the guest kernel crashed (console in {}); booting it again. The oops:\n{oops}",
                kept.display()
            );
            crashes.push(oops.lines().take(3).collect::<Vec<_>>().join(" / "));
            continue;
        }
        return kernel_row(k, &label, &b, &console, timeout, &dir, crashes);
    }
}

fn kernel_row(
    k: &Kernel,
    label: &str,
    b: &qemu::Boot,
    console: &qemu::Console,
    timeout: Duration,
    dir: &Path,
    crashes: Vec<String>,
) -> Result<Row> {
    for (name, section) in &console.sections {
        std::fs::write(dir.join(section_file(name)), &section.body)?;
    }
    let cells = Scenario::ALL.into_iter().map(|s| (s, guest_observed(console, s, b))).collect();
    let scenario_s = Scenario::ALL.into_iter().filter_map(|s| Some((s, console.sections.get(s.name())?.secs?))).collect();
    if b.timed_out {
        eprintln!("xtask: kernels: {label}: WARNING: stopped after {} s without finishing (raise --kernel-timeout?)", timeout.as_secs());
    } else if !console.done {
        let shown = oops_excerpt(&b.console).unwrap_or_else(|| {
            let tail: Vec<&str> = b.console.lines().collect();
            tail[tail.len().saturating_sub(15)..].join("\n")
        });
        eprintln!(
            "xtask: kernels: {label}: WARNING: the guest ended before its last scenario; the console said:\n{shown}{}",
            if b.stderr.trim().is_empty() { String::new() } else { format!("\nQEMU said: {}", b.stderr.trim()) }
        );
    }
    let release = console.release.clone().unwrap_or_else(|| k.release.clone());
    Ok(Row {
        name: k.distro.label.to_string(),
        release,
        detail: format!("{} ({}), cgroup v2; {}", k.package, k.distro.suite, rss_hook(dir)),
        boot_s: b.boot.map(|d| d.as_secs_f64()),
        run_s: Some(b.wall.as_secs_f64()),
        cells,
        scenario_s,
        crashes,
    })
}

/// `2026-12-06 02:40 UTC`.
fn utc_now() -> String {
    output(command("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).map(|d| d.trim().to_string()).unwrap_or_else(|| "unknown date".into())
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn host_cgroups() -> &'static str {
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        "cgroup v1 memory controller"
    } else {
        "cgroup v2"
    }
}

/// The matrix: kernels, initramfs, host reference, each kernel, the table.
/// The binaries the matrix runs, built in release (as the user, before any sudo).
pub fn build_bins() -> Result<()> {
    exec(command("cargo").current_dir(workspace_root()).args([
        "build", "--release", "-p", "tracer", "--bin", "tracer", "-p", "tracer-tests", "--bin", "tracer-stress",
    ]))
}

/// The matrix; `built`: the binaries are built already (the privileged run of a user's
/// `cargo xtask test`, which runs no cargo).
pub fn run(opts: &Options, built: bool) -> Result<()> {
    let started = Instant::now();
    let cache = fetch::cache_dir(opts.kernel_cache.as_deref());
    if !crate::privilege::is_root() {
        bail!(
            "the kernel matrix runs the scenarios on this host (eBPF programs, a memory cgroup) and caches kernels in {}: \
             run it as root, or as yourself with sudo (`cargo xtask test --kernels-only`)",
            cache.display()
        );
    }
    if let Err(e) = ensure_tools() {
        // A machine that cannot run QEMU skips the matrix, loudly, rather than failing the suite.
        eprintln!("\nxtask: SKIPPED the kernel matrix: {e:#}\n");
        return Ok(());
    }
    let root = workspace_root();
    if !built {
        build_bins()?;
    }
    let release = root.join("target/release");
    let bins = host::Bins { tracer: release.join("tracer"), stress: release.join("tracer-stress") };
    let out = root.join("target/kernels");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("host")).with_context(|| format!("cannot create {}", out.display()))?;

    // The kernels.
    let distros: Vec<Distro> =
        DISTROS.into_iter().filter(|d| opts.kernel.is_empty() || opts.kernel.iter().any(|k| k.key() == d.key)).collect();
    let mut kernels = Vec::new();
    let mut skipped = Vec::new();
    let mut downloaded = Duration::ZERO;
    for d in distros {
        match fetch::fetch(d, &cache, opts.refresh_kernels) {
            Fetched::Ready { kernel, downloaded: took } => {
                downloaded += took.unwrap_or_default();
                kernels.push(kernel);
            }
            Fetched::Skipped { distro, why } => {
                eprintln!("\nxtask: kernels: SKIPPING {} ({}): {why}\n", distro.label, distro.suite);
                skipped.push(Skipped { name: format!("{} ({})", distro.label, distro.suite), why });
            }
        }
    }

    let initrd = out.join("initramfs.gz");
    let size = initramfs::build(
        &[
            initramfs::Program { host: &bins.tracer, name: "tracer" },
            initramfs::Program { host: &bins.stress, name: "tracer-stress" },
        ],
        &initrd,
    )?;
    println!("xtask: kernels: initramfs {} ({:.1} MiB)", initrd.display(), size as f64 / (1 << 20) as f64);

    // The reference.
    let host_started = Instant::now();
    let host_results = host::run(&bins, &out.join("host"));
    let host = Row {
        name: "host".into(),
        release: host_release(),
        detail: format!("{}; {}", host_cgroups(), rss_hook(&out.join("host"))),
        boot_s: None,
        run_s: Some(host_started.elapsed().as_secs_f64()),
        cells: host_results.iter().map(|(s, o, _)| (*s, o.clone())).collect(),
        scenario_s: host_results.iter().map(|(s, _, t)| (*s, *t)).collect(),
        crashes: Vec::new(),
    };

    let mut rows = Vec::new();
    for k in &kernels {
        match boot_kernel(k, &initrd, Duration::from_secs(opts.kernel_timeout), &out) {
            Ok(row) => rows.push(row),
            Err(e) => skipped.push(Skipped { name: format!("{} {}", k.distro.label, k.release), why: format!("cannot boot: {e:#}") }),
        }
    }

    let total = started.elapsed();
    let table = matrix::table(&host, &rows, &skipped);
    let diffs = matrix::differences(&host, &rows);
    let notes = matrix::notes(&host, &rows);
    let qemu_version = qemu::version();
    println!("\n== kernel matrix: verdict causes per scenario (✓ as on the host, ✗ not) ==\n{table}");
    let md = results_markdown(&ResultsInput {
        host: &host,
        rows: &rows,
        skipped: &skipped,
        table: &table,
        diffs: &diffs,
        notes: &notes,
        qemu: &qemu_version,
        total,
        downloaded,
        kernels: &kernels,
    });
    let results = root.join("bench/results/kernels.md");
    std::fs::create_dir_all(results.parent().expect("has a parent"))?;
    std::fs::write(&results, md).with_context(|| format!("cannot write {}", results.display()))?;
    println!("xtask: kernels: {} kernel(s) in {:.0} s (downloads {:.1} s); table in {}, evidence in {}", rows.len(), total.as_secs_f64(), downloaded.as_secs_f64(), results.display(), out.display());
    for n in &notes {
        println!("xtask: kernels: note: {n}");
    }
    for s in &skipped {
        eprintln!("xtask: kernels: WARNING: {} was SKIPPED: {}", s.name, s.why);
    }
    if !diffs.is_empty() {
        let list: Vec<String> = diffs.iter().map(|d| format!("  {d}")).collect();
        bail!(
            "{} scenario(s) differ from the host:\n{}\nthe reports are in {} (KERNEL/SCENARIO.report.json, .jsonl, .log.txt)",
            diffs.len(),
            list.join("\n"),
            out.display()
        );
    }
    if rows.is_empty() {
        eprintln!("xtask: kernels: WARNING: no kernel was compared with the host: the matrix proves nothing this time");
    }
    Ok(())
}

struct ResultsInput<'a> {
    host: &'a Row,
    rows: &'a [Row],
    skipped: &'a [Skipped],
    table: &'a str,
    diffs: &'a [matrix::Difference],
    notes: &'a [String],
    qemu: &'a str,
    total: Duration,
    downloaded: Duration,
    kernels: &'a [Kernel],
}

fn results_markdown(r: &ResultsInput) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Kernel matrix\n");
    let _ = writeln!(
        s,
        "`cargo xtask test` (or `--kernels-only`), {}: the end-to-end scenarios under `tracer run` on this host and \
         in Debian kernels booted by QEMU, and the verdict causes of each (`cause` of `tracer report --format json`). \
         ✓: the same causes as on the host, ✗: not.\n",
        utc_now()
    );
    let _ = writeln!(s, "- host: {} ({})", r.host.release, r.host.detail);
    for k in r.rows {
        let _ = writeln!(s, "- {} {}: {}", k.name, k.release, k.detail);
    }
    let _ = writeln!(s, "- {}, `-accel tcg -cpu max -m 1024 -smp 2` (software emulation)", r.qemu);
    let cached = r.kernels.iter().map(|k| k.vmlinuz.display().to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "- whole matrix {:.0} s, of which downloading kernels {:.1} s{}; kernels: {}\n",
        r.total.as_secs_f64(),
        r.downloaded.as_secs_f64(),
        if r.downloaded.is_zero() { " (all cached)" } else { "" },
        if cached.is_empty() { "none".into() } else { cached }
    );
    let _ = writeln!(s, "{}", r.table);
    let _ = writeln!(s, "boot: QEMU start to /init; scenarios: the host's scenarios, or the guest's whole run (boot included).\n");
    let _ = writeln!(s, "Seconds per scenario (`tracer run` to its end; the guest's own clock under emulation):\n");
    let _ = writeln!(s, "{}", matrix::times(r.host, r.rows));
    if r.diffs.is_empty() {
        let _ = writeln!(s, "No differences from the host.\n");
    } else {
        let _ = writeln!(s, "## Differences from the host\n");
        for d in r.diffs {
            let _ = writeln!(s, "- {d}");
        }
        s.push('\n');
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "## Notes (the same causes, other verdict details)\n");
        for n in r.notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "## Skipped\n");
        for k in r.skipped {
            let _ = writeln!(s, "- {}: {}", k.name, k.why.replace('\n', " "));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Scenarios\n");
    for sc in Scenario::ALL {
        let _ = writeln!(s, "- `{}`: {}", sc.name(), sc.what());
    }
    let _ = writeln!(
        s,
        "\nThe guest (xtask/src/kernels/guest.sh) mounts cgroup2 with `+memory`, tracefs and debugfs, raises \
         RLIMIT_MEMLOCK, and prints each report between markers on the serial console; the consoles, traces and \
         reports of the last run are in target/kernels/."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_from_a_report() {
        let json = r#"{"source":"t.jsonl","verdicts":[{"cause":"killed_by_signal","pid":1,"resets":3},{"cause":"abort_on_close","resets":1},{"cause":"killed_by_signal"}]}"#;
        let v = verdicts_of_report(json).unwrap();
        assert_eq!(v.causes.into_iter().collect::<Vec<_>>(), ["abort_on_close", "killed_by_signal"]);
        assert_eq!(v.resets, 4);
        assert_eq!(verdicts_of_report(r#"{"verdicts":[]}"#).unwrap(), Verdicts::default());
        let json = r#"{"verdicts":[],"target":{"program":"/bin/tracer-stress mmap-file /tmp/model.bin"},
            "memory":{"file_mappings":[{"path":"/tmp/model.bin","bytes":16777216,"size":16777216},{"path":"/lib/libc.so.6","bytes":1,"size":1}]}}"#;
        let v = verdicts_of_report(json).unwrap();
        assert_eq!(v.facts.into_iter().collect::<Vec<_>>(), ["mapped 16 MiB of model.bin, a 16 MiB file", "ran tracer-stress mmap-file"]);
        // A kernel where the programs could not read the file: no size, a different fact.
        let json = r#"{"verdicts":[],"memory":{"file_mappings":[{"path":"/tmp/model.bin","bytes":16777216,"size":null}]}}"#;
        assert_eq!(verdicts_of_report(json).unwrap().facts.into_iter().collect::<Vec<_>>(), ["mapped 16 MiB of model.bin, a ? file"]);
        assert!(verdicts_of_report("tracer: cannot read").is_err());
        assert!(verdicts_of_report(r#"{"summary":[]}"#).is_err());
    }

    #[test]
    fn an_oops_is_shown_from_its_first_line() {
        let console = "@@@KERNEL 6.12\n@@@BEGIN abort t=1\nguest: listening\n[ 14.7] BUG: unable to handle page fault for address: 0\n[ 14.7] RIP: 0010:x\n[ 14.8] Kernel panic - not syncing\n";
        let oops = oops_excerpt(console).unwrap();
        assert!(oops.starts_with("[ 14.7] BUG: unable"), "{oops}");
        assert_eq!(oops.lines().count(), 3);
        assert_eq!(oops_excerpt("@@@KERNEL 6.12\n@@@BEGIN abort t=1\nguest: no \"x\" in y\n"), None);
    }

    #[test]
    fn guest_results_from_the_console() {
        let console = "@@@KERNEL 6.1.0-57-amd64\n\
                       @@@BEGIN refused t=1\n@@@END refused rc=0 t=2\n\
                       @@@BEGIN refused.report t=2\n{\"verdicts\":[{\"cause\":\"reset_by_peer\"}]}\n\n@@@END refused.report rc=0 t=2\n\
                       @@@BEGIN abort t=3\n@@@END abort rc=1 t=4\n\
                       @@@BEGIN abort.log t=4\nError: cannot attach\n@@@END abort.log rc=0 t=4\n\
                       @@@BEGIN abort.report t=4\n\n@@@END abort.report rc=0 t=4\n\
                       @@@BEGIN killed_with_clients t=5\nguest: waiting\n";
        let c = qemu::parse_console(console);
        let b = qemu::Boot { console: console.into(), boot: None, wall: Duration::ZERO, timed_out: true, stderr: String::new() };
        assert_eq!(guest_observed(&c, Scenario::Refused, &b), Ok(Verdicts { causes: ["reset_by_peer".to_string()].into(), resets: 0, facts: Default::default() }));
        assert_eq!(guest_observed(&c, Scenario::Abort, &b), Err("no report (tracer exit 1); tracer said: Error: cannot attach".into()));
        assert!(guest_observed(&c, Scenario::KilledWithClients, &b).unwrap_err().starts_with("cut short"));
        assert_eq!(guest_observed(&c, Scenario::MmapFile, &b), Err("not run: the guest timed out before it".into()));
    }

    #[test]
    fn test_options_with_the_matrix_flags_parse() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            test: crate::test::Options,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["test", "--kernels-only", "--kernel", "debian11,debian13", "--kernel-timeout", "60"]).unwrap();
        let _ = cli.test;
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(section_file("oom.report"), "oom.report.json");
        assert_eq!(section_file("oom.jsonl"), "oom.jsonl");
    }

    #[test]
    fn the_rss_hook_comes_from_the_oom_traces_first_line() {
        let dir = std::env::temp_dir().join(format!("xtask-rss-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(rss_hook(&dir), "rss probe: no trace_start in its oom trace");
        let start = r#"{"kind":"trace_start","probes":["task:task_newtask","kmem:rss_stat (BTF)","tcp:tcp_send_reset"]}"#;
        std::fs::write(dir.join("oom.jsonl"), format!("{start}\n{{\"kind\":\"rss\"}}\n")).unwrap();
        assert_eq!(rss_hook(&dir), "rss probe on kmem:rss_stat (BTF)");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(section_file("oom.log"), "oom.log.txt");
    }
}

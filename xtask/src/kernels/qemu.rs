//! Booting one kernel under QEMU with software emulation (TCG: KVM is not needed, and
//! hangs on some hosts), the serial console captured with the time each line came, and
//! the console's marked sections (see guest.sh) read back.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::Scenario;
use crate::exec::{command, output};

pub const QEMU: &str = "qemu-system-x86_64";

/// The QEMU command line: TCG, no network card, no display, the console on stdio.
pub fn qemu_args(kernel: &Path, initrd: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-nic", "none", "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(kernel.into());
    args.push("-initrd".into());
    args.push(initrd.into());
    args.push("-append".into());
    args.push("console=ttyS0 panic=-1 quiet loglevel=3".into());
    args
}

/// `QEMU emulator version 7.2.22 (Debian ...)`.
pub fn version() -> String {
    output(command(QEMU).arg("--version"))
        .and_then(|o| o.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// A finished (or stopped) boot.
pub struct Boot {
    /// The console, `\r` removed.
    pub console: String,
    /// From QEMU's start to `@@@KERNEL` (kernel up, /init running).
    pub boot: Option<Duration>,
    /// From QEMU's start to its end.
    pub wall: Duration,
    /// Set when QEMU had to be killed after the timeout.
    pub timed_out: bool,
    /// QEMU's own stderr (its errors, not the guest's).
    pub stderr: String,
}

/// Boots `kernel` with `initrd`, copies the console to `log` as it comes (and the end of
/// each scenario to the terminal), and stops QEMU after `timeout`.
pub fn boot(label: &str, kernel: &Path, initrd: &Path, timeout: Duration, log: &Path) -> Result<Boot> {
    let mut log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let started = Instant::now();
    let mut cmd = command(QEMU);
    cmd.args(qemu_args(kernel, initrd)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown: Vec<String> = qemu_args(kernel, initrd).iter().map(|a| {
        let a = a.to_string_lossy();
        if a.contains(' ') { format!("\"{a}\"") } else { a.into_owned() }
    }).collect();
    println!("xtask: kernels: {label}: booting ({QEMU} {})", shown.join(" "));
    let mut child = cmd.spawn().with_context(|| format!("cannot start {QEMU}: install it with `apt-get install qemu-system-x86`"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr_pipe = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).replace('\r', "");
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let deadline = started + timeout;
    let mut console = String::new();
    let mut booted = None;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((at, line)) => {
                let _ = writeln!(log_file, "{line}");
                if let (None, Some(Marker::Kernel(release))) = (booted, Marker::parse(&line)) {
                    booted = Some(at - started);
                    println!("xtask: kernels: {label}: up in {:.1} s (uname -r: {release})", (at - started).as_secs_f64());
                }
                if let Some(Marker::End { name, rc, .. }) = Marker::parse(&line) {
                    if Scenario::from_name(&name).is_some() {
                        let rc = rc.map_or("?".into(), |r| r.to_string());
                        println!("xtask: kernels: {label}: {name} done (tracer exit {rc}) at {:.0} s", (at - started).as_secs_f64());
                    }
                }
                let hung = is_hang_report(&line);
                console.push_str(&line);
                console.push('\n');
                if hung && !timed_out {
                    // It does not come back (seen: 250 s and counting): stop now, as for a
                    // crash, instead of waiting out the timeout.
                    println!("xtask: kernels: {label}: the guest reports a hang: {}", line.trim());
                    let _ = child.kill();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !timed_out && Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    let wall = started.elapsed();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(Boot { console, boot: booted, wall, timed_out, stderr })
}

/// Whether a console line is the guest kernel reporting a CPU stuck in the kernel (its
/// soft or hard lockup watchdog): software emulation of two CPUs has been seen to hang
/// both while tracepoints were being switched on, never to recover.
fn is_hang_report(line: &str) -> bool {
    line.contains("BUG: soft lockup") || line.contains("Watchdog detected hard LOCKUP")
}

/// A marker line of the guest's console.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Kernel(String),
    Begin { name: String, t: Option<f64> },
    End { name: String, rc: Option<i32>, t: Option<f64> },
    Done,
}

impl Marker {
    /// A marker anywhere in the line (a kernel message may precede it).
    fn parse(line: &str) -> Option<Marker> {
        let at = line.find("@@@")?;
        let mut words = line[at + 3..].split_whitespace();
        let word = words.next()?;
        let rest: Vec<&str> = words.collect();
        let field = |key: &str| rest.iter().find_map(|w| w.strip_prefix(key));
        match word {
            "KERNEL" => Some(Marker::Kernel(rest.first()?.to_string())),
            "DONE" => Some(Marker::Done),
            "BEGIN" => Some(Marker::Begin { name: rest.first()?.to_string(), t: field("t=").and_then(|t| t.parse().ok()) }),
            "END" => Some(Marker::End {
                name: rest.first()?.to_string(),
                rc: field("rc=").and_then(|r| r.parse().ok()),
                t: field("t=").and_then(|t| t.parse().ok()),
            }),
            _ => None,
        }
    }
}

/// One section of the console.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    pub body: String,
    /// From `@@@END NAME rc=N`; None when the section never ended.
    pub rc: Option<i32>,
    /// Guest uptime between BEGIN and END.
    pub secs: Option<f64>,
    pub ended: bool,
}

/// What the console says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Console {
    /// `uname -r` in the guest.
    pub release: Option<String>,
    /// Every scenario ran (`@@@DONE`).
    pub done: bool,
    pub sections: BTreeMap<String, Section>,
}

/// Reads the marked sections; text outside them (kernel messages) is ignored.
pub fn parse_console(text: &str) -> Console {
    let mut c = Console::default();
    let mut open: Option<(String, Option<f64>, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        match Marker::parse(line) {
            Some(Marker::Kernel(r)) => c.release = Some(r),
            Some(Marker::Done) => c.done = true,
            Some(Marker::Begin { name, t }) => {
                if let Some((name, _, body)) = open.take() {
                    c.sections.insert(name, Section { body, ..Section::default() });
                }
                open = Some((name, t, String::new()));
            }
            Some(Marker::End { name, rc, t }) => {
                if let Some((open_name, t0, body)) = open.take() {
                    if open_name == name {
                        let secs = t0.zip(t).map(|(a, b)| b - a);
                        c.sections.insert(name, Section { body, rc, secs, ended: true });
                    } else {
                        c.sections.insert(open_name, Section { body, ..Section::default() });
                    }
                }
            }
            None => {
                if let Some((_, _, body)) = open.as_mut() {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    if let Some((name, _, body)) = open {
        c.sections.insert(name, Section { body, ..Section::default() });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockup_report_stops_the_guest_and_reads_as_a_crash() {
        // The line Debian 12's 6.1 printed under emulation, both vCPUs stuck.
        let line = "[   56.582958] watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [tracer:134]";
        assert!(is_hang_report(line));
        assert!(!is_hang_report("[    0.1] NMI watchdog: Perf NMI watchdog permanently disabled"));
        // What the kernel row makes of the console it leaves: a crash, booted again once.
        let console = format!("@@@KERNEL 6.1.0-57-amd64\n@@@BEGIN signal t=6.84\n{line}\n");
        assert!(super::super::oops_excerpt(&console).is_some_and(|o| o.starts_with(line)));
    }

    #[test]
    fn markers() {
        assert_eq!(Marker::parse("@@@KERNEL 6.1.0-57-amd64"), Some(Marker::Kernel("6.1.0-57-amd64".into())));
        assert_eq!(Marker::parse("@@@BEGIN oom t=3.25"), Some(Marker::Begin { name: "oom".into(), t: Some(3.25) }));
        assert_eq!(
            Marker::parse("[   12.0] some kernel line@@@END oom rc=0 t=5.00"),
            Some(Marker::End { name: "oom".into(), rc: Some(0), t: Some(5.0) })
        );
        assert_eq!(Marker::parse("@@@END oom"), Some(Marker::End { name: "oom".into(), rc: None, t: None }));
        assert_eq!(Marker::parse("@@@DONE"), Some(Marker::Done));
        assert_eq!(Marker::parse("no marker here"), None);
        assert_eq!(Marker::parse("@@@BEGIN"), None);
    }

    #[test]
    fn console_sections() {
        let text = "SeaBIOS noise\r\n\
                    @@@KERNEL 5.10.0-46-amd64\r\n\
                    @@@BEGIN refused t=10.00\r\n\
                    @@@END refused rc=0 t=12.50\r\n\
                    @@@BEGIN refused.report t=12.60\r\n\
                    {\r\n  \"verdicts\": []\r\n}\r\n\
                    \r\n\
                    @@@END refused.report rc=0 t=12.61\r\n\
                    [  13.1] random: crng init done\r\n\
                    @@@BEGIN abort t=13.00\r\n\
                    guest: no \"listening\" in /tmp/abort.out after 90s\r\n";
        let c = parse_console(text);
        assert_eq!(c.release.as_deref(), Some("5.10.0-46-amd64"));
        assert!(!c.done);
        let r = &c.sections["refused"];
        assert_eq!((r.rc, r.ended, r.body.as_str()), (Some(0), true, ""));
        assert!((r.secs.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(c.sections["refused.report"].body.trim(), "{\n  \"verdicts\": []\n}");
        // Cut short: the open section is kept, unended, and kernel lines outside are not.
        let a = &c.sections["abort"];
        assert!(!a.ended && a.rc.is_none() && a.body.contains("no \"listening\""));
        assert!(!c.sections.values().any(|s| s.body.contains("crng")));
        assert!(parse_console("@@@DONE\n").done);
    }

    #[test]
    fn qemu_is_told_tcg_and_no_network_card() {
        let args: Vec<String> = qemu_args(Path::new("/k"), Path::new("/i")).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg -cpu max"), "{joined}");
        assert!(!joined.contains("kvm"), "{joined}");
        assert!(joined.contains("-kernel /k -initrd /i -append console=ttyS0 panic=-1"), "{joined}");
    }
}

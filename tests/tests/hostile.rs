//! Issue 14's hostile uses, each a repro that failed before: a full disk, a reader that
//! closes the pipe, pids that are not a live process, a PID namespace, endless input and
//! option values that read as something else. Each is one clear line and the right exit
//! status, never a flood of errors, a panic, or a silent empty trace.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use tracer_tests::{require_root, stress_bin, tracer_bin, ChildGuard, TempDir};

/// A tmpfs of `size` mounted on a temporary folder, unmounted on drop.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = TempDir::new("small-disk");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.0.display());
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
    }
}

/// `sh -c` that runs a burst of mmap/munmap calls in a child of the traced shell.
fn burst_command(calls: u64) -> String {
    format!("echo go | {} mmap-burst {calls}", stress_bin().display())
}

#[test]
fn a_full_disk_is_one_line_naming_the_file_and_a_failure_status() {
    require_root("mounting a tmpfs and loading eBPF programs");
    let disk = SmallDisk::mount("1m");
    let trace = disk.dir.0.join("x.jsonl");
    let out = Command::new(tracer_bin())
        .args(["run", "--no-tui", "--follow-children", "--jsonl"])
        .arg(&trace)
        .args(["--", "sh", "-c", &burst_command(200_000)])
        .stdin(Stdio::null())
        .output()
        .expect("tracer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a trace that could not be written is a failure:\n{err}");
    let failures = err.lines().filter(|l| l.contains("No space left on device")).count();
    assert_eq!(failures, 1, "one line, not one per event:\n{err}");
    assert!(err.contains(&format!("writing the trace to {} failed", trace.display())), "{err}");
    assert!(!err.contains("\x1b["), "no colour codes off a terminal:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_reader_closing_the_pipe_is_a_quiet_successful_stop() {
    require_root("loading eBPF programs");
    let mut child = ChildGuard(
        Command::new(tracer_bin())
            .args(["run", "--no-tui", "--follow-children", "--jsonl", "-", "--", "sh", "-c", &burst_command(200_000)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracer"),
    );
    // `| head -3`: read three lines, then close the pipe.
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    for _ in 0..3 {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("a trace line") > 0);
    }
    drop(out);
    let status = wait(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(status.success(), "a reader that stops reading is not a failure:\n{err}");
    assert!(!err.contains("Broken pipe") && !err.contains("ERROR"), "{err}");
}

fn wait(child: &mut ChildGuard, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tracer(args: &[&str]) -> (bool, String) {
    let out = Command::new(tracer_bin()).args(args).stdin(Stdio::null()).output().expect("tracer");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_zombie_is_named_as_one_with_its_parent() {
    // sh starts `true` in the background, then becomes `sleep`, which never reaps it.
    let parent = ChildGuard(Command::new("sh").args(["-c", "true & exec sleep 20"]).spawn().expect("sh"));
    let children = format!("/proc/{0}/task/{0}/children", parent.pid());
    let mut zombie = None;
    for _ in 0..250 {
        let pid: Option<u32> = std::fs::read_to_string(&children).ok().and_then(|s| s.split_whitespace().next()?.parse().ok());
        if let Some(pid) = pid {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')) {
                zombie = Some(pid);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let zombie = zombie.expect("a zombie child of sleep");
    let (ok, err) = tracer(&["--pid", &zombie.to_string(), "--no-tui"]);
    assert!(!ok);
    assert!(err.contains(&format!("pid {zombie} (")) && err.contains("is a zombie"), "{err}");
    assert!(err.contains(&format!("(pid {}, sleep)", parent.pid())), "the parent that has not reaped it: {err}");
}

#[test]
fn a_thread_id_traces_its_process_and_says_so() {
    require_root("loading eBPF programs");
    // A process with a second thread: a tid that is not the pid.
    let python = ChildGuard(
        Command::new("python3")
            .args(["-c", "import threading,time; threading.Thread(target=time.sleep,args=(30,)).start(); print('ready', flush=True); time.sleep(30)"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let pid = python.pid();
    let tid = loop {
        let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&t| t != pid)
            .collect();
        if let Some(&t) = tids.first() {
            break t;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Command::new(tracer_bin())
        .args(["--pid", &tid.to_string(), "--no-tui", "--jsonl", "-", "--duration", "300ms"])
        .stdin(Stdio::null())
        .output()
        .expect("tracer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{tid} is a thread of process {pid}: tracing the whole process")), "{err}");
    let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
    let start: serde_json::Value = serde_json::from_str(&first).expect("trace_start");
    assert_eq!(start["target_pid"], pid, "{first}");
}

#[test]
fn a_kernel_thread_is_refused_with_a_sentence() {
    if !std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
        eprintln!("SKIPPED: pid 2 is not kthreadd here");
        return;
    }
    let (ok, err) = tracer(&["--pid", "2", "--no-tui"]);
    assert!(!ok);
    assert!(err.contains("pid 2 (kthreadd) is a kernel thread"), "{err}");
}

#[test]
fn inside_a_pid_namespace_tracer_refuses_instead_of_tracing_nothing() {
    require_root("unshare --pid");
    for args in [vec!["--pid", "1", "--no-tui"], vec!["run", "--no-tui", "--", "true"]] {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(tracer_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("unshare (util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains("inside a PID namespace") && err.contains("--pid=host"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "no trace at all: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn option_values_that_mean_nothing_are_refused() {
    let (ok, err) = tracer(&["--pid", "1", "--duration", "0s"]);
    assert!(!ok && err.contains("a trace of no time records nothing"), "{err}");
    let (ok, err) = tracer(&["doctor", "--model", "x"]);
    assert!(!ok && err.contains("\"x\" is a name without a folder"), "{err}");
}

#[test]
fn an_endless_line_is_refused_not_read_into_memory() {
    let out = Command::new(tracer_bin()).args(["report", "/dev/zero"]).output().expect("tracer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/dev/zero: line 1 is longer than 16.0 MiB"), "{err}");
    assert!(!err.contains("memory allocation") && !err.contains("panicked"), "{err}");
}

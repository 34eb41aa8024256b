//! The live timeline end to end, on a real terminal: tmux gives `tracer run` a 100x30
//! pseudo-terminal, the target is OOM-killed in a 64 MiB memory cgroup, and the test reads
//! the screen as a user would, presses `f` and `q`, then checks the trace file and that
//! the verdict was printed on the restored terminal. Root (eBPF, cgroups) and tmux
//! (installed with apt-get when missing).
use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::{is_root, stress_bin, tracer_bin, Memcg, TempDir};

const WIDTH: u16 = 100;
const HEIGHT: u16 = 30;

fn have_tmux() -> bool {
    Command::new("tmux").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// tmux, installed when missing; a clear failure (not a silent pass) when it cannot be.
fn require_tmux() {
    if have_tmux() {
        return;
    }
    let installed =
        Command::new("apt-get").args(["install", "-y", "-q", "tmux"]).env("DEBIAN_FRONTEND", "noninteractive").output();
    if !have_tmux() {
        let why = match installed {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        panic!("the live-view test drives the TUI in tmux, which is not installed and `apt-get install -y tmux` failed ({why}): install tmux (e.g. `apt-get update && apt-get install -y tmux`) and run it again");
    }
}

/// A tmux server of our own (its own socket, no user config), killed on drop even when
/// the test fails.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn start(name: &str, width: u16, height: u16, shell_command: &str) -> Tmux {
        let t = Tmux { socket: format!("tracer-test-{name}-{}", std::process::id()), session: name.to_string() };
        let out = t.run(&["new-session", "-d", "-s", name, "-x", &width.to_string(), "-y", &height.to_string(), shell_command]);
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").args(["-f", "/dev/null", "-L", &self.socket]).args(args).output().expect("running tmux")
    }

    /// The screen as shown now (the alternate screen while the TUI is up).
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.session]).stdout).into_owned()
    }

    /// The normal screen with its scrollback, wrapped lines joined.
    fn history(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-J", "-S", "-1000", "-t", &self.session]).stdout).into_owned()
    }

    fn send(&self, key: &str) {
        let out = self.run(&["send-keys", "-t", &self.session, key]);
        assert!(out.status.success(), "tmux send-keys {key}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls the screen until `done` says so; the last screen on timeout, in the panic.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                !screen.contains("tracer exited with status"),
                "the tracer exited before the screen showed {what}:\n{}",
                self.history()
            );
            assert!(Instant::now() < deadline, "the screen did not show {what} within {timeout:?}; last screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-session", "-t", &self.session]);
        let _ = self.run(&["kill-server"]);
    }
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The rows between the header (3 rows) and the event list's title: the memory chart.
fn chart_rows(screen: &str) -> String {
    screen.lines().skip(3).take_while(|l| !l.contains(" events · filter")).collect::<Vec<_>>().join("\n")
}

/// From the verdict panel's title down.
fn verdict_rows(screen: &str) -> String {
    screen.lines().skip_while(|l| !l.contains(" verdict")).collect::<Vec<_>>().join("\n")
}

#[test]
fn live_view_shows_an_oom_kill_filters_quits_on_q_and_prints_the_verdict_after_restoring_the_terminal() {
    assert!(is_root(), "the live-view test loads eBPF programs and creates a memory cgroup: run it as root");
    require_tmux();
    let cg = Memcg::new("tui", 64 << 20).expect("memory cgroup");
    let dir = TempDir::new("tui");
    let trace = dir.0.join("trace.jsonl");
    let tracer = format!(
        "{} run --jsonl {} --rss-threshold 1MiB -- {} alloc --cgroup {}",
        quoted(&tracer_bin()),
        quoted(&trace),
        quoted(&stress_bin()),
        quoted(&cg.path)
    );
    // The shell stays after the tracer so that the restored screen can be read.
    let shell = format!("cd {} && {tracer}; echo \"tracer exited with status $?\"; sleep 100000", quoted(&dir.0));
    let tmux = Tmux::start("tui", WIDTH, HEIGHT, &shell);

    let screen = tmux.wait_for("the OOM kill, its verdict and the end of the trace", Duration::from_secs(90), |s| {
        chart_rows(s).contains("OOM")
            && verdict_rows(s).contains("oom_killed")
            && s.lines().next().is_some_and(|l| l.contains("killed by SIGKILL (OOM killer)"))
            && s.contains("trace ended: target_exited")
    });
    assert!(screen.contains("tracer-stress"), "the header names the target:\n{screen}");
    assert!(screen.contains(" events · filter all "), "{screen}");
    assert!(!screen.contains("tracer: verdict"), "nothing printed over the live view:\n{screen}");

    tmux.send("f");
    tmux.wait_for("the filter label changed to memory", Duration::from_secs(10), |s| s.contains(" events · filter memory "));

    tmux.send("q");
    let restored = tmux.wait_for("the tracer's exit", Duration::from_secs(30), |s| s.contains("tracer exited with status"));
    assert!(restored.contains("tracer exited with status 0"), "{}", tmux.history());
    let history = tmux.history();
    // The alternate screen is gone with everything drawn on it: what is printed on the
    // normal screen was printed after the terminal was restored.
    assert!(!history.contains(" events · filter"), "the live view is gone:\n{history}");
    assert!(history.contains("tracer: tracing pid"), "{history}");
    let verdict = history.find("tracer: verdict 1/").unwrap_or_else(|| panic!("no verdict on the restored terminal:\n{history}"));
    assert!(history[verdict..].contains("cause: oom_killed"), "{history}");
    assert!(history.contains(&format!("trace written to {}", trace.display())), "{history}");
    let log = dir.0.join("trace.output.log");
    assert!(history.contains(&format!("stdout and stderr are in {}", log.display())), "{history}");
    assert!(log.exists(), "the command's output log next to the trace");

    let text = std::fs::read_to_string(&trace).expect("the trace file");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a non-empty trace")).expect("a JSON line");
    assert_eq!(last["kind"], "trace_end", "last line: {last}");
    assert_eq!(last["reason"], "target_exited", "last line: {last}");
    assert!(text.lines().any(|l| l.contains(r#""kind":"verdict""#) && l.contains("oom_killed")), "the verdict line in the trace");
    assert!(cg.procs().is_empty(), "the target is gone from its cgroup");
}

/// Under `timeout` (which runs the command in a background process group) the tracer
/// must not take the terminal: it would be stopped by SIGTTOU with its target held. It
/// writes plain lines and ends with the target.
#[test]
fn in_a_background_process_group_the_tracer_prints_plain_lines_and_never_stops() {
    assert!(is_root(), "the live-view test loads eBPF programs: run it as root");
    require_tmux();
    let dir = TempDir::new("tui-bg");
    let trace = dir.0.join("trace.jsonl");
    let tracer = format!("timeout 60 {} run --jsonl {} -- sleep 1", quoted(&tracer_bin()), quoted(&trace));
    let shell = format!("cd {} && {tracer}; echo \"tracer exited with status $?\"; sleep 100000", quoted(&dir.0));
    let tmux = Tmux::start("tui-bg", WIDTH, HEIGHT, &shell);
    let deadline = Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let s = tmux.history();
        if s.contains("tracer exited with status") {
            break s;
        }
        assert!(Instant::now() < deadline, "the tracer did not end with its 1 s target (stopped by the terminal?):\n{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("tracer exited with status 0"), "{screen}");
    assert!(!screen.contains(" events · filter"), "no live view from a background group:\n{screen}");
    assert!(screen.contains("stopped: target_exited"), "plain lines:\n{screen}");
}

//! Where a trace goes and how the session shows itself: the live view or plain lines, the
//! trace file's name when the user gave none, and where a started command's output goes
//! while the view owns the terminal.
use std::path::{Path, PathBuf};

/// Where the JSON-lines trace goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceOut {
    Stdout,
    File(PathBuf),
}

/// How a session shows itself: the TUI or plain streaming, and where the trace goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub tui: bool,
    pub trace: TraceOut,
    /// No `--jsonl` was given and the file name is ours: the end of the session says where.
    pub named_by_us: bool,
}

impl Plan {
    /// The argument for [`crate::export::jsonl::JsonlWriter::create`].
    pub fn jsonl_arg(&self) -> String {
        match &self.trace {
            TraceOut::Stdout => "-".into(),
            TraceOut::File(p) => p.display().to_string(),
        }
    }

    pub fn trace_file(&self) -> Option<&Path> {
        match &self.trace {
            TraceOut::Stdout => None,
            TraceOut::File(p) => Some(p),
        }
    }
}

/// `--jsonl` values that write to the terminal or to standard output: the TUI cannot
/// share it with them.
pub fn writes_to_stdout(jsonl: &str) -> bool {
    matches!(jsonl, "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" | "/dev/tty")
}

/// Decides the session's output. `tui_allowed` is [`crate::tui::should_use_tui`] (not
/// `--no-tui`, stdout and stdin terminals, `TERM` not dumb); `default_file` names the
/// trace when the TUI is on and no `--jsonl` was given.
///
/// | `--jsonl`        | terminal (TUI allowed)           | otherwise          |
/// |------------------|----------------------------------|--------------------|
/// | none             | TUI, trace to `default_file()`   | plain, stdout      |
/// | `-`              | plain, stdout                    | plain, stdout      |
/// | `FILE`           | TUI, trace to FILE               | plain, FILE        |
pub fn plan(jsonl: Option<&str>, tui_allowed: bool, default_file: impl FnOnce() -> PathBuf) -> Plan {
    match jsonl {
        Some("-") => Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
        Some(path) => {
            Plan { tui: tui_allowed && !writes_to_stdout(path), trace: TraceOut::File(path.into()), named_by_us: false }
        }
        None if tui_allowed => Plan { tui: true, trace: TraceOut::File(default_file()), named_by_us: true },
        None => Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
    }
}

/// `tracer-LABEL-YYYYMMDD-HHMMSS.jsonl` in `dir` (local time), with `-2`, `-3`... when that
/// name is taken.
pub fn default_trace_path(dir: &Path, label: &str) -> PathBuf {
    let stem = format!("tracer-{label}-{}", local_timestamp());
    let mut path = dir.join(format!("{stem}.jsonl"));
    let mut n = 2;
    while path.exists() || output_log_path(&path).exists() {
        path = dir.join(format!("{stem}-{n}.jsonl"));
        n += 1;
    }
    path
}

/// A file-name-safe label for a command: its program's base name.
pub fn program_label(program: &str) -> String {
    let base = Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let label: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).take(32).collect();
    if label.is_empty() || label.starts_with('.') {
        format!("cmd{label}")
    } else {
        label
    }
}

/// Where a command started by `tracer run` under the TUI writes its stdout and stderr:
/// next to the trace, `NAME.jsonl` -> `NAME.output.log`.
pub fn output_log_path(trace: &Path) -> PathBuf {
    let name = trace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trace".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    trace.with_file_name(format!("{stem}.output.log"))
}

/// `YYYYMMDD-HHMMSS` in local time.
fn local_timestamp() -> String {
    // SAFETY: time and localtime_r write only into the locals given.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("{t}");
        }
        tm
    };
    format!("{:04}{:02}{:02}-{:02}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::tui_allowed;
    use std::ffi::OsStr;


    /// The decision as main makes it: from the flags and the terminal.
    fn decide(no_tui: bool, jsonl: Option<&str>, stdout_tty: bool, stdin_tty: bool, term: Option<&str>) -> Plan {
        let allowed = tui_allowed(no_tui, stdout_tty, stdin_tty, term.map(OsStr::new));
        plan(jsonl, allowed, || PathBuf::from("tracer-42-20250101-120000.jsonl"))
    }

    #[test]
    fn the_tui_needs_a_terminal_on_both_ends_no_flag_against_it_and_the_trace_off_stdout() {
        let auto = TraceOut::File("tracer-42-20250101-120000.jsonl".into());
        let file = TraceOut::File("t.jsonl".into());
        // A terminal, no --jsonl: the TUI, the trace in a file named for the user.
        assert_eq!(decide(false, None, true, true, Some("xterm")), Plan { tui: true, trace: auto.clone(), named_by_us: true });
        assert_eq!(decide(false, None, true, true, None), Plan { tui: true, trace: auto, named_by_us: true });
        // A terminal and --jsonl FILE: the TUI, the user's file.
        assert_eq!(
            decide(false, Some("t.jsonl"), true, true, Some("xterm")),
            Plan { tui: true, trace: file.clone(), named_by_us: false }
        );
        // The trace to stdout: plain streaming, whatever the terminal.
        for out in ["-", "/dev/stdout", "/dev/tty"] {
            let p = decide(false, Some(out), true, true, Some("xterm"));
            assert!(!p.tui, "{out}: {p:?}");
        }
        assert_eq!(decide(false, Some("-"), true, true, Some("xterm")).trace, TraceOut::Stdout);
        // --no-tui: today's behaviour, stdout by default.
        assert_eq!(
            decide(true, None, true, true, Some("xterm")),
            Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false }
        );
        assert_eq!(
            decide(true, Some("t.jsonl"), true, true, Some("xterm")),
            Plan { tui: false, trace: file.clone(), named_by_us: false }
        );
        // Not a terminal on either end, or a dumb one: plain.
        for (o, i, t) in
            [(false, true, Some("xterm")), (true, false, Some("xterm")), (false, false, None), (true, true, Some("dumb"))]
        {
            assert_eq!(
                decide(false, None, o, i, t),
                Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
                "{o} {i} {t:?}"
            );
            assert_eq!(decide(false, Some("t.jsonl"), o, i, t), Plan { tui: false, trace: file.clone(), named_by_us: false });
        }
        assert_eq!(decide(false, None, true, true, None).jsonl_arg(), "tracer-42-20250101-120000.jsonl");
        assert_eq!(decide(false, None, false, false, None).jsonl_arg(), "-");
    }

    #[test]
    fn default_names_are_unique_and_the_output_log_sits_next_to_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let a = default_trace_path(dir.path(), "4711");
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("tracer-4711-2")
                && name.ends_with(".jsonl")
                && name.len() == "tracer-4711-YYYYMMDD-HHMMSS.jsonl".len(),
            "{name}"
        );
        std::fs::write(&a, "").unwrap();
        let b = default_trace_path(dir.path(), "4711");
        assert_ne!(a, b);
        assert_eq!(output_log_path(Path::new("/x/t.jsonl")), Path::new("/x/t.output.log"));
        assert_eq!(output_log_path(Path::new("trace")), Path::new("trace.output.log"));
        assert_eq!(program_label("/usr/bin/python3"), "python3");
        assert_eq!(program_label("./my server"), "my_server");
        assert_eq!(program_label("/"), "cmd");
    }
}

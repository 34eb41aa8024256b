//! A command started for `tracer run`: forked and held before exec, so that its pid is in
//! the kernel filter before it runs a single instruction of the new program.
use std::{
    ffi::CString,
    io::{Read, Write},
    os::{fd::FromRawFd, unix::fs::PermissionsExt},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("no command given: usage `tracer run -- CMD [ARGS...]`")]
    EmptyCommand,
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
}

/// A command forked and held just before exec: its pid is known and can be added to the
/// kernel filter before it runs a single instruction of the new program.
pub struct HeldCommand {
    pub pid: u32,
    go: std::fs::File,
    exec_error: std::fs::File,
}

/// The started command, for waiting on without blocking.
#[derive(Debug)]
pub struct StartedCommand {
    pub pid: u32,
    reaped: bool,
}

impl StartedCommand {
    /// `Some(status)` once it exited (and is reaped), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.reaped {
            return Some(0);
        }
        let mut status = 0;
        // SAFETY: plain syscall on our own child.
        let rc = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        if rc == self.pid as i32 || rc < 0 {
            self.reaped = true;
            return Some(status);
        }
        None
    }
}

/// Standard streams for a started command other than the tracer's own: stdin from
/// `stdin`, stdout and stderr both to `output` (the live view owns the terminal).
pub struct Redirect {
    pub stdin: std::fs::File,
    pub output: std::fs::File,
}

impl Redirect {
    /// Stdin from /dev/null, stdout and stderr to `log` (created or truncated).
    pub fn to_log(log: &std::path::Path) -> std::io::Result<Redirect> {
        Ok(Redirect { stdin: std::fs::File::open("/dev/null")?, output: std::fs::File::create(log)? })
    }
}

impl HeldCommand {
    /// Forks `argv` with the tracer's standard streams, held before exec.
    pub fn spawn(argv: &[String]) -> Result<HeldCommand, SpawnError> {
        HeldCommand::spawn_with(argv, None)
    }

    /// [`HeldCommand::spawn`], with the standard streams redirected when `redirect` says.
    pub fn spawn_with(argv: &[String], redirect: Option<&Redirect>) -> Result<HeldCommand, SpawnError> {
        use std::os::fd::AsRawFd as _;
        let streams = redirect.map(|r| (r.stdin.as_raw_fd(), r.output.as_raw_fd()));
        let program = argv.first().ok_or(SpawnError::EmptyCommand)?;
        let path = resolve_program(program)
            .ok_or_else(|| SpawnError::Spawn(program.clone(), std::io::Error::from_raw_os_error(libc::ENOENT)))?;
        let to_c = |s: &str| {
            CString::new(s).map_err(|_| SpawnError::Spawn(program.clone(), std::io::Error::other("argument contains a NUL byte")))
        };
        let c_path = to_c(&path)?;
        let c_args = argv.iter().map(|a| to_c(a)).collect::<Result<Vec<_>, _>>()?;
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());
        let (go_r, go_w) = pipe().map_err(|e| SpawnError::Spawn(program.clone(), e))?;
        let (err_r, err_w) = pipe().map_err(|e| SpawnError::Spawn(program.clone(), e))?;
        // SAFETY: the child calls only async-signal-safe functions (read, write, close,
        // execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SpawnError::Spawn(program.clone(), std::io::Error::last_os_error()));
        }
        if pid == 0 {
            unsafe {
                libc::close(go_w);
                libc::close(err_r);
                let mut b = [0u8; 1];
                if libc::read(go_r, b.as_mut_ptr().cast(), 1) != 1 {
                    libc::_exit(126);
                }
                // dup2 clears close-on-exec on the copies; the originals close at exec.
                if let Some((input, output)) = streams {
                    if libc::dup2(input, 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(output, 2) < 0 {
                        let errno = *libc::__errno_location();
                        libc::write(err_w, (&errno as *const i32).cast(), 4);
                        libc::_exit(127);
                    }
                }
                libc::execv(c_path.as_ptr(), c_argv.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_w, (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        // SAFETY: these fds are ours; each is closed or owned exactly once.
        unsafe {
            libc::close(go_r);
            libc::close(err_w);
        }
        Ok(HeldCommand {
            pid: pid as u32,
            go: unsafe { std::fs::File::from_raw_fd(go_w) },
            exec_error: unsafe { std::fs::File::from_raw_fd(err_r) },
        })
    }

    /// Lets the command exec; fails with the reason when exec failed.
    /// Dropping a `HeldCommand` instead closes the pipe: the child exits 126 unexec'd.
    pub fn release(mut self, program: &str) -> Result<StartedCommand, SpawnError> {
        let _ = self.go.write_all(&[1]);
        drop(self.go);
        // The error pipe closes on a successful exec (CLOEXEC) and carries errno otherwise.
        let mut buf = [0u8; 4];
        let mut started = StartedCommand { pid: self.pid, reaped: false };
        match self.exec_error.read(&mut buf) {
            Ok(4) => {
                let _ = started_wait_blocking(&mut started);
                Err(SpawnError::Spawn(program.to_string(), std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf))))
            }
            _ => Ok(started),
        }
    }
}

fn started_wait_blocking(c: &mut StartedCommand) -> i32 {
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(c.pid as i32, &mut status, 0) };
    c.reaped = true;
    status
}

/// PATH lookup done before fork (execvp may allocate, which a forked child must not).
fn resolve_program(program: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{program}")).find(|p| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

fn pipe() -> std::io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element array. CLOEXEC keeps them out of the exec'd image.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_command_has_pid_before_exec_and_runs_after_release() {
        let held = HeldCommand::spawn(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        assert!(held.pid > 0);
        // Still the forked copy of the test binary: not exec'd yet.
        let comm = std::fs::read_to_string(format!("/proc/{}/cmdline", held.pid)).unwrap();
        assert!(!comm.starts_with("sh"), "exec'd before release: {comm}");
        let mut child = held.release("sh").unwrap();
        let status = loop {
            if let Some(s) = child.try_wait() {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7, "status {status}");
    }

    #[test]
    fn a_redirected_command_reads_dev_null_and_writes_both_streams_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t.output.log");
        let redirect = Redirect::to_log(&log).unwrap();
        let script = "read line; echo \"in:[$line]\"; echo out; echo err >&2; exit 3";
        let held = HeldCommand::spawn_with(&["sh".into(), "-c".into(), script.into()], Some(&redirect)).unwrap();
        drop(redirect);
        let mut started = held.release("sh").unwrap();
        let status = started_wait_blocking(&mut started);
        assert_eq!(libc::WEXITSTATUS(status), 3);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "in:[]\nout\nerr\n");
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let held = HeldCommand::spawn(&["/nonexistent/prog".into()]).unwrap();
        let err = held.release("/nonexistent/prog").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
        let err = HeldCommand::spawn(&["no-such-program-anywhere".into()]).err().unwrap();
        assert!(err.to_string().contains("no-such-program-anywhere"), "{err}");
    }
}

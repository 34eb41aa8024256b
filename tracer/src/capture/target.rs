//! The processes to trace: an existing pid (with its threads and, optionally, its
//! descendants) or a command started held before exec so that nothing is missed.
use std::{
    collections::HashMap,
    ffi::CString,
    io::{Read, Write},
    os::{fd::FromRawFd, unix::fs::PermissionsExt},
};

use super::CaptureError;

pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Thread ids of a process.
pub fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// All live descendants of `pid` (children, grandchildren...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()));
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// A TCP socket a process has open, from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSocket {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    pub listening: bool,
}

/// TCP sockets among the open files of `pid` (listeners and connections), so that a
/// server traced with `--pid` after it started listening is still known as the owner.
pub fn tcp_sockets(pid: u32) -> Vec<OwnedSocket> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        out.extend(table.lines().skip(1).filter_map(|l| parse_proc_net_tcp_line(l, v6)).filter(|(inode, _)| inodes.contains(inode)).map(|(_, s)| s));
    }
    out
}

/// One line of /proc/net/tcp{,6}: `sl local rem st ... uid timeout inode`.
fn parse_proc_net_tcp_line(line: &str, v6: bool) -> Option<(u64, OwnedSocket)> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let local = parse_proc_addr(cols.get(1)?, v6)?;
    let remote = parse_proc_addr(cols.get(2)?, v6)?;
    let state = u8::from_str_radix(cols.get(3)?, 16).ok()?;
    let inode = cols.get(9)?.parse().ok()?;
    // 0x0A is TCP_LISTEN in the kernel's numbering, which /proc prints in hex.
    Some((inode, OwnedSocket { local, remote, listening: state == 0x0a }))
}

fn parse_proc_addr(s: &str, v6: bool) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Addresses are printed as native-endian 32-bit words.
    let words: Vec<u32> = (0..ip.len() / 8).map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)).collect::<Result<_, _>>().ok()?;
    let ip = if v6 {
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate().take(4) {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(bytes))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(words.first()?.to_ne_bytes()))
    };
    Some(std::net::SocketAddr::new(ip, port))
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
    pub fn spawn(argv: &[String]) -> Result<HeldCommand, CaptureError> {
        HeldCommand::spawn_with(argv, None)
    }

    /// [`HeldCommand::spawn`], with the standard streams redirected when `redirect` says.
    pub fn spawn_with(argv: &[String], redirect: Option<&Redirect>) -> Result<HeldCommand, CaptureError> {
        use std::os::fd::AsRawFd as _;
        let streams = redirect.map(|r| (r.stdin.as_raw_fd(), r.output.as_raw_fd()));
        let program = argv.first().ok_or(CaptureError::EmptyCommand)?;
        let path = resolve_program(program)
            .ok_or_else(|| CaptureError::Spawn(program.clone(), std::io::Error::from_raw_os_error(libc::ENOENT)))?;
        let to_c = |s: &str| {
            CString::new(s).map_err(|_| CaptureError::Spawn(program.clone(), std::io::Error::other("argument contains a NUL byte")))
        };
        let c_path = to_c(&path)?;
        let c_args = argv.iter().map(|a| to_c(a)).collect::<Result<Vec<_>, _>>()?;
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());
        let (go_r, go_w) = pipe().map_err(|e| CaptureError::Spawn(program.clone(), e))?;
        let (err_r, err_w) = pipe().map_err(|e| CaptureError::Spawn(program.clone(), e))?;
        // SAFETY: the child calls only async-signal-safe functions (read, write, close,
        // execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(CaptureError::Spawn(program.clone(), std::io::Error::last_os_error()));
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
    pub fn release(mut self, program: &str) -> Result<StartedCommand, CaptureError> {
        let _ = self.go.write_all(&[1]);
        drop(self.go);
        // The error pipe closes on a successful exec (CLOEXEC) and carries errno otherwise.
        let mut buf = [0u8; 4];
        let mut started = StartedCommand { pid: self.pid, reaped: false };
        match self.exec_error.read(&mut buf) {
            Ok(4) => {
                let _ = started_wait_blocking(&mut started);
                Err(CaptureError::Spawn(program.to_string(), std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf))))
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

    #[test]
    fn proc_net_tcp_lines_parse_to_addresses() {
        let line = "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let (inode, s) = parse_proc_net_tcp_line(line, false).unwrap();
        assert_eq!(inode, 12345);
        assert_eq!(s.local, "127.0.0.1:8000".parse().unwrap());
        assert!(s.listening);
    }

    #[test]
    fn own_listening_socket_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = tcp_sockets(std::process::id());
        assert!(found.iter().any(|s| s.listening && s.local.port() == port), "{found:?}");
    }

    #[test]
    fn own_process_is_found_with_threads() {
        let me = std::process::id();
        assert!(process_exists(me));
        assert!(threads(me).contains(&me));
        assert!(!process_exists(u32::MAX - 1));
    }
}

//! The stress program: small, exactly known behaviours for the tracer to observe
//! (allocation until OOM, file mappings, mmap bursts, TCP resets of every kind).
//! Lines it prints on stdout (`ready`, `listening PORT`) let a test synchronise with it.
use std::{
    io::{BufRead, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: tracer-stress <command>
  alloc [--cgroup DIR]          join the cgroup, then allocate and touch 1 MiB at a time forever
  mmap-file PATH                map PATH read-only, touch every page, print `touched N`, exit
  mmap-burst N                  print `ready`, wait for a line on stdin, then N/2 mmap+munmap pairs, _exit(0)
  ignore-term                   ignore SIGTERM, print `ready`, sleep until killed
  exit CODE                     exit with CODE
  segv                          write through a null pointer
  connect PORT                  connect to 127.0.0.1:PORT, print the outcome
  serve-unread                  listen on 127.0.0.1:0, print `listening PORT`, accept one, wait for data, close unread
  serve-exit CODE               listen, print `listening PORT`, accept one, wait for data, exit(CODE) unread
  serve-idle N                  listen, print `listening PORT`, accept N, print `accepted`, sleep until killed
  linger-client PORT            connect to 127.0.0.1:PORT, set SO_LINGER 0, print `connected`, close";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("tracer-stress: {e:#}\n{USAGE}");
        std::process::exit(2);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T> {
    args.get(i).with_context(|| format!("missing {what}"))?.parse().ok().with_context(|| format!("bad {what}"))
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("alloc") => {
            if let (Some("--cgroup"), Some(dir)) = (args.get(1).map(String::as_str), args.get(2)) {
                std::fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string())
                    .with_context(|| format!("joining cgroup {dir}"))?;
            }
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                for i in (0..chunk.len()).step_by(4096) {
                    chunk[i] = 1;
                }
                chunks.push(chunk);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Some("mmap-file") => {
            let path: String = arg(args, 1, "PATH")?;
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            let len = file.metadata()?.len() as usize;
            // SAFETY: read-only private mapping of a file we opened.
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
            };
            if ptr == libc::MAP_FAILED {
                bail!("mmap {path}: {}", std::io::Error::last_os_error());
            }
            let mut sum = 0u64;
            for off in (0..len).step_by(4096) {
                // SAFETY: within the mapping.
                sum += unsafe { std::ptr::read_volatile((ptr as *const u8).add(off)) } as u64;
            }
            say(&format!("touched {} pages (sum {sum})", len / 4096));
            Ok(())
        }
        Some("mmap-burst") => {
            let n: u64 = arg(args, 1, "N")?;
            say("ready");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            // Raw syscalls and _exit: nothing else between `go` and the end maps memory.
            for _ in 0..n / 2 {
                // SAFETY: anonymous mapping, unmapped right away.
                unsafe {
                    let p = libc::syscall(
                        libc::SYS_mmap,
                        0usize,
                        4096usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1i32,
                        0usize,
                    );
                    libc::syscall(libc::SYS_munmap, p, 4096usize);
                }
            }
            unsafe { libc::_exit(0) }
        }
        Some("ignore-term") => {
            // SAFETY: installing SIG_IGN.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            say("ready");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Some("exit") => std::process::exit(arg(args, 1, "CODE")?),
        Some("segv") => {
            // SAFETY: deliberately not: this is the crash being traced.
            unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u32>(), 1) };
            Ok(())
        }
        Some("connect") => {
            let port: u16 = arg(args, 1, "PORT")?;
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(_) => say("connected"),
                Err(e) => say(&format!("error {}", e.raw_os_error().unwrap_or(0))),
            }
            Ok(())
        }
        Some("serve-unread") => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            say(&format!("listening {}", listener.local_addr()?.port()));
            let (stream, _) = listener.accept()?;
            let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 10_000) };
            drop(stream); // unread data -> RST
            Ok(())
        }
        Some("serve-exit") => {
            // Accept one client and exit with CODE before reading its request: the kernel
            // closes the socket with unread data at exit and resets the client.
            let code: i32 = arg(args, 1, "CODE")?;
            let listener = TcpListener::bind("127.0.0.1:0")?;
            say(&format!("listening {}", listener.local_addr()?.port()));
            let (stream, _) = listener.accept()?;
            let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 10_000) };
            let _keep = (listener, stream);
            std::process::exit(code);
        }
        Some("serve-idle") => {
            let n: usize = arg(args, 1, "N")?;
            let listener = TcpListener::bind("127.0.0.1:0")?;
            say(&format!("listening {}", listener.local_addr()?.port()));
            let conns: Vec<TcpStream> = (0..n).map(|_| listener.accept().map(|(s, _)| s)).collect::<Result<_, _>>()?;
            say("accepted");
            let _keep = (listener, conns);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Some("linger-client") => {
            let port: u16 = arg(args, 1, "PORT")?;
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: valid socket and option struct.
            let rc = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as u32,
                )
            };
            if rc != 0 {
                bail!("SO_LINGER: {}", std::io::Error::last_os_error());
            }
            say("connected");
            drop(stream);
            Ok(())
        }
        _ => bail!("unknown command"),
    }
}

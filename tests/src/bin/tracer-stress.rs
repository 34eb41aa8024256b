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
  mmap-hide PATH DECOY          map PATH, rename it to PATH.moved, close it, open DECOY (same fd), unmap, exit
  mmap-burst N                  print `ready`, wait for a line on stdin, then N/2 mmap+munmap pairs, _exit(0)
  ignore-term [TAG]             ignore SIGTERM, print `ready`, sleep until killed (TAG: any word, to tell runs apart)
  hold MIB                      allocate and touch MIB MiB once, print `holding`, sleep until killed
  exit CODE                     exit with CODE
  segv                          write through a null pointer
  connect PORT                  connect to 127.0.0.1:PORT, print the outcome
  serve-unread                  listen on 127.0.0.1:0, print `listening PORT`, accept one, wait for data, close unread
  serve-exit CODE               listen, print `listening PORT`, accept one, wait for data, exit(CODE) unread
  serve-idle N                  listen, print `listening PORT`, accept N, print `accepted`, sleep until killed
  linger-client PORT            connect to 127.0.0.1:PORT, set SO_LINGER 0, print `connected`, close
  bench [--pace-us U] PHASE=N.. for `cargo xtask bench`: print `ready`, wait for a line on stdin, run each
                                phase, print `phase NAME ops=N wall_ns=W cpu_ns=C` for each, then `done`, _exit(0).
                                Phases: mem (mmap 64 KiB, touch each page, munmap), signals (SIGUSR1 to
                                itself, handled), rst (loopback connect, accept, SO_LINGER 0 close: one RST
                                each), burst (N raw mmap/munmap syscalls of one page, N even, nothing else).
                                --pace-us sleeps U microseconds between operations";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("tracer-stress: {e:#}\n{USAGE}");
        std::process::exit(2);
    }
}

/// A fresh MiB with every page written: resident at once.
fn touched_mib() -> Vec<u8> {
    let mut chunk = vec![0u8; 1 << 20];
    for i in (0..chunk.len()).step_by(4096) {
        chunk[i] = 1;
    }
    chunk
}

/// `--cgroup DIR` at the start of `args`: moves this process into that cgroup.
fn join_cgroup(args: &[String]) -> Result<()> {
    if let (Some("--cgroup"), Some(dir)) = (args.first().map(String::as_str), args.get(1)) {
        std::fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {dir}"))?;
    }
    Ok(())
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
            join_cgroup(&args[1..])?;
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(touched_mib());
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Some("grow") => {
            // A steady leak: MIB_PER_S, in 1 MiB steps, until the memory cgroup kills it.
            let rate: u64 = arg(args, 1, "MIB_PER_S")?;
            join_cgroup(&args[2..])?;
            say("growing");
            let started = std::time::Instant::now();
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(touched_mib());
                let due = Duration::from_secs_f64(chunks.len() as f64 / rate.max(1) as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        Some("spike") => {
            // Up by MIB in a quarter of a second, all freed, then flat for 3 s: a spike that fits.
            let mib: usize = arg(args, 1, "MIB")?;
            say("spiking");
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                chunks.push(touched_mib());
                std::thread::sleep(Duration::from_micros(250_000 / mib.max(1) as u64));
            }
            drop(chunks);
            say("flat");
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
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
            // Keep it mapped a moment, as a loaded model stays mapped: the tracer names the
            // file from /proc/PID/maps when it decodes the record, which a process that
            // exits at once can beat on a loaded machine.
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        }
        Some("hold") => {
            let mib: usize = arg(args, 1, "MIB")?;
            let mut block = vec![0u8; mib << 20];
            for i in (0..block.len()).step_by(4096) {
                block[i] = 1;
            }
            say("holding");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                std::hint::black_box(&block);
            }
        }
        Some("mmap-hide") => {
            // Everything /proc could say about the mapping is gone or wrong by the time
            // the tracer reads the record: the mapping is undone, the name changed, and
            // the fd number names another file.
            let path: String = arg(args, 1, "PATH")?;
            let decoy: String = arg(args, 2, "DECOY")?;
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            let fd = file.as_raw_fd();
            let len = file.metadata()?.len() as usize;
            // SAFETY: read-only private mapping of a file we opened.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0) };
            if ptr == libc::MAP_FAILED {
                bail!("mmap {path}: {}", std::io::Error::last_os_error());
            }
            std::fs::rename(&path, format!("{path}.moved"))?;
            drop(file);
            let other = std::fs::File::open(&decoy).with_context(|| format!("opening {decoy}"))?;
            if other.as_raw_fd() != fd {
                bail!("the decoy got fd {}, not {fd}", other.as_raw_fd());
            }
            // SAFETY: the mapping made above.
            unsafe { libc::munmap(ptr, len) };
            say(&format!("hidden fd {fd}"));
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }
        Some("thread-mmaps") => {
            // N threads one after another, each making one mmap+munmap of 8 KiB and
            // exiting: more threads than the kernel side's per-thread maps hold at once.
            let n: u64 = arg(args, 1, "N")?;
            say("ready");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            for _ in 0..n {
                std::thread::spawn(|| map_and_unmap(8192))
                .join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))?;
            }
            say("done");
            Ok(())
        }
        Some("mmap-burst") => {
            let n: u64 = arg(args, 1, "N")?;
            say("ready");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            // Raw syscalls and _exit: nothing else between `go` and the end maps memory.
            for _ in 0..n / 2 {
                map_and_unmap(4096);
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
            set_linger_zero(&stream)?;
            say("connected");
            drop(stream);
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
        _ => bail!("unknown command"),
    }
}

/// `bench`: exactly counted operations for `cargo xtask bench`, timed from the inside.
mod bench {
    use std::{
        io::BufRead,
        net::{TcpListener, TcpStream},
        sync::atomic::{AtomicU64, Ordering},
        time::{Duration, Instant},
    };

    use anyhow::{bail, Context, Result};

    use super::say;

    const MEM_BYTES: usize = 64 << 10;
    const PAGE: usize = 4096;

    static DELIVERED: AtomicU64 = AtomicU64::new(0);

    extern "C" fn on_usr1(_: libc::c_int) {
        DELIVERED.fetch_add(1, Ordering::Relaxed);
    }

    enum Phase {
        Mem(u64),
        Signals(u64),
        Rst(u64, TcpListener),
        Burst(u64),
    }

    impl Phase {
        fn parse(spec: &str) -> Result<Phase> {
            let (name, n) = spec.split_once('=').with_context(|| format!("phase {spec:?}: use NAME=N"))?;
            let n: u64 = n.parse().ok().with_context(|| format!("phase {spec:?}: N is not a count"))?;
            Ok(match name {
                "mem" => Phase::Mem(n),
                "signals" => Phase::Signals(n),
                // Listening before `ready`: only the cycles are in the phase.
                "rst" => Phase::Rst(n, TcpListener::bind("127.0.0.1:0").context("loopback listener")?),
                "burst" if n.is_multiple_of(2) => Phase::Burst(n),
                "burst" => bail!("burst={n}: N counts mmap+munmap calls, it must be even"),
                other => bail!("unknown phase {other:?} (mem, signals, rst, burst)"),
            })
        }

        fn name(&self) -> &'static str {
            match self {
                Phase::Mem(_) => "mem",
                Phase::Signals(_) => "signals",
                Phase::Rst(..) => "rst",
                Phase::Burst(_) => "burst",
            }
        }
    }

    fn cpu_ns() -> u64 {
        // SAFETY: getrusage fills the struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    pub fn run(args: &[String]) -> Result<()> {
        let mut pace = None;
        let mut phases = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--pace-us" {
                let us: u64 = it.next().and_then(|v| v.parse().ok()).context("--pace-us needs microseconds")?;
                pace = Some(Duration::from_micros(us));
            } else {
                phases.push(Phase::parse(a)?);
            }
        }
        if phases.is_empty() {
            bail!("bench: name at least one phase, e.g. mem=10000");
        }
        // SAFETY: installing a plain handler that only bumps an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        say("ready");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let mut results = Vec::with_capacity(phases.len());
        for phase in &phases {
            let (cpu0, t0) = (cpu_ns(), Instant::now());
            let ops = match phase {
                Phase::Mem(n) => mem(*n, pace),
                Phase::Signals(n) => signals(*n, pace)?,
                Phase::Rst(n, listener) => rst(*n, listener, pace)?,
                Phase::Burst(n) => burst(*n, pace),
            };
            let wall = t0.elapsed().as_nanos() as u64;
            results.push((phase.name(), ops, wall, cpu_ns().saturating_sub(cpu0)));
        }
        // Printed after every phase: nothing the phases count happens while reporting.
        for (name, ops, wall, cpu) in results {
            say(&format!("phase {name} ops={ops} wall_ns={wall} cpu_ns={cpu}"));
        }
        say("done");
        // _exit: no runtime teardown (it unmaps memory) after the counted work.
        unsafe { libc::_exit(0) }
    }

    fn pause(pace: Option<Duration>) {
        if let Some(d) = pace {
            std::thread::sleep(d);
        }
    }

    fn mem(n: u64, pace: Option<Duration>) -> u64 {
        for _ in 0..n {
            // SAFETY: anonymous mapping, touched within its length, unmapped right away.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    MEM_BYTES,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p != libc::MAP_FAILED {
                    for off in (0..MEM_BYTES).step_by(PAGE) {
                        std::ptr::write_volatile((p as *mut u8).add(off), 1);
                    }
                    libc::munmap(p, MEM_BYTES);
                }
            }
            pause(pace);
        }
        n
    }

    fn signals(n: u64, pace: Option<Duration>) -> Result<u64> {
        let before = DELIVERED.load(Ordering::Relaxed);
        // SAFETY: plain syscalls; the handler for SIGUSR1 is installed.
        let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as libc::pid_t) };
        for _ in 0..n {
            // SAFETY: signalling this thread, whose SIGUSR1 handler only counts.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
            pause(pace);
        }
        let delivered = DELIVERED.load(Ordering::Relaxed) - before;
        if delivered != n {
            bail!("signals: sent {n}, handled {delivered}");
        }
        Ok(n)
    }

    fn rst(n: u64, listener: &TcpListener, pace: Option<Duration>) -> Result<u64> {
        let addr = listener.local_addr()?;
        for i in 0..n {
            let client = TcpStream::connect(addr).with_context(|| format!("rst cycle {i}: connect"))?;
            let (server, _) = listener.accept().with_context(|| format!("rst cycle {i}: accept"))?;
            super::set_linger_zero(&client)?;
            drop(client); // SO_LINGER 0: the close sends a RST to `server`
            drop(server);
            pause(pace);
        }
        Ok(n)
    }

    fn burst(n: u64, pace: Option<Duration>) -> u64 {
        // Raw syscalls: nothing else in this phase maps memory.
        for _ in 0..n / 2 {
            super::map_and_unmap(PAGE);
            pause(pace);
        }
        n
    }
}

/// SO_LINGER {on, 0}: closing the socket then sends a RST instead of a FIN.
fn set_linger_zero(stream: &TcpStream) -> Result<()> {
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
    Ok(())
}

/// One anonymous mmap of `len` bytes and its munmap, as raw syscalls: nothing else in
/// between maps memory.
fn map_and_unmap(len: usize) {
    // SAFETY: anonymous mapping, unmapped right away.
    unsafe {
        let p = libc::syscall(
            libc::SYS_mmap,
            0usize,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1i32,
            0usize,
        );
        libc::syscall(libc::SYS_munmap, p, len);
    }
}

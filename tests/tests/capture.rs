//! End-to-end capture scenarios on the real kernel. They need root (CI is root) and run
//! one at a time (`--test-threads=1`: they share kernel state such as the OOM killer).
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use tracer::event::{Direction, Event, EventKind};
use tracer_tests::{is_root, require_root, start_stress_server, stress, stress_bin, wait_for_line, ChildGuard, Memcg, TempDir, TracerRun};

const T: Duration = Duration::from_secs(60);



fn resets(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| matches!(e.kind, EventKind::TcpReset { .. })).collect()
}

fn reason(e: &Event) -> Option<&str> {
    match &e.kind {
        EventKind::TcpReset { reason, .. } => reason.as_deref(),
        _ => None,
    }
}

#[test]
fn oom_kill_in_memcg_is_traced_signal_victim_exit_after_rss_growth() {
    require_root("end-to-end capture tests load eBPF programs");
    let cg = Memcg::new("oom", 64 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let run = TracerRun::start(&["run", "--rss-threshold", "1MiB", "--grace", "500ms", "--", &stress(), "alloc", "--cgroup", &cgroup]);
    let trace = run.finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();

    let kill = trace
        .position(|e| matches!(&e.kind, EventKind::Signal { target_pid, signal: 9, si_code_name, .. } if *target_pid == pid && si_code_name == "SI_KERNEL"))
        .unwrap_or_else(|| panic!("no SIGKILL/SI_KERNEL for {pid}\n{dump}"));
    let victim = trace
        .position(|e| matches!(&e.kind, EventKind::OomKill { victim_pid: Some(v), is_target: true, .. } if *v == pid))
        .unwrap_or_else(|| panic!("no mark_victim for {pid}\n{dump}"));
    let exit = trace
        .position(|e| e.pid == pid && matches!(&e.kind, EventKind::Exit { group_dead: true, signal: Some(9), .. }))
        .unwrap_or_else(|| panic!("no exit by SIGKILL for {pid}\n{dump}"));
    assert!(kill < victim && victim < exit, "order signal {kill} < mark_victim {victim} < exit {exit}\n{dump}");

    // The kernel's own account of the victim: anonymous memory near the 64 MiB limit.
    if let EventKind::OomKill { anon_rss_kb: Some(anon), .. } = &trace.events[victim].kind {
        assert!(*anon > 40 * 1024, "victim anon rss {anon} kB\n{dump}");
    }
    let rss_before: Vec<i64> = trace.events[..kill]
        .iter()
        .filter(|e| e.pid == pid)
        .filter_map(|e| match &e.kind {
            EventKind::Rss { member, bytes } if member == "MM_ANONPAGES" => Some(*bytes),
            _ => None,
        })
        .collect();
    let peak = rss_before.iter().copied().max().unwrap_or(0);
    assert!(rss_before.len() >= 10, "expected anon rss growth records, got {rss_before:?}\n{dump}");
    assert!(peak > 48 << 20 && peak <= 64 << 20, "anon rss peak {peak} not near the 64 MiB limit\n{dump}");
    assert!(cg.procs().is_empty(), "process still in the cgroup");
}

#[test]
fn sigterm_then_sigkill_from_another_process_name_the_sender() {
    require_root("end-to-end capture tests load eBPF programs");
    let mut run = TracerRun::start(&["run", "--grace", "300ms", "--", &stress(), "ignore-term"]);
    let mut out = run.stdout.take().expect("stdout");
    wait_for_line(&mut out, "ready");
    let pid = run.traced_child();
    let term = Command::new("kill").args(["-TERM", &pid.to_string()]).spawn().unwrap();
    let term_pid = term.id();
    assert!(ChildGuard(term).0.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill").args(["-KILL", &pid.to_string()]).spawn().unwrap();
    let kill_pid = kill.id();
    assert!(ChildGuard(kill).0.wait().unwrap().success());
    let trace = run.finish(T);
    let dump = trace.dump();

    let sent: Vec<(u32, String, i32, String)> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Signal { target_pid, signal, si_code_name, .. } if *target_pid == pid => {
                Some((e.pid, e.comm.clone(), *signal, si_code_name.clone()))
            }
            _ => None,
        })
        .filter(|(_, _, sig, _)| *sig == 15 || *sig == 9)
        .collect();
    assert_eq!(
        sent,
        vec![(term_pid, "kill".to_string(), 15, "SI_USER".to_string()), (kill_pid, "kill".to_string(), 9, "SI_USER".to_string())],
        "{dump}"
    );
    assert!(
        trace.events.iter().any(|e| e.pid == pid && matches!(&e.kind, EventKind::Exit { group_dead: true, signal: Some(9), .. })),
        "{dump}"
    );
}

#[test]
fn exit_code_and_crash_signal_are_reported() {
    require_root("end-to-end capture tests load eBPF programs");
    let trace = TracerRun::start(&["run", "--grace", "200ms", "--", &stress(), "exit", "3"]).finish(T);
    let pid = trace.target_pid();
    assert!(
        trace.events.iter().any(|e| e.pid == pid
            && matches!(&e.kind, EventKind::Exit { group_dead: true, exit_code: Some(3), signal: None, source, .. } if source == "task_exit_code")),
        "{}",
        trace.dump()
    );
    let trace = TracerRun::start(&["run", "--grace", "200ms", "--", &stress(), "segv"]).finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    let generated = trace
        .position(|e| matches!(&e.kind, EventKind::Signal { target_pid, signal: 11, si_code_name, .. } if *target_pid == pid && si_code_name == "SEGV_MAPERR"))
        .unwrap_or_else(|| panic!("no SIGSEGV/SEGV_MAPERR\n{dump}"));
    let exit = trace
        .position(|e| e.pid == pid && matches!(&e.kind, EventKind::Exit { group_dead: true, signal: Some(11), .. }))
        .unwrap_or_else(|| panic!("no exit by SIGSEGV\n{dump}"));
    assert!(generated < exit, "{dump}");
}

#[test]
fn file_mapping_has_its_path_and_file_rss_grows() {
    require_root("end-to-end capture tests load eBPF programs");
    let dir = TempDir::new("mmap");
    let file = dir.0.join("weights.bin");
    std::fs::write(&file, vec![7u8; 64 << 20]).unwrap();
    let path = file.display().to_string();
    let trace = TracerRun::start(&["run", "--rss-threshold", "4MiB", "--grace", "200ms", "--", &stress(), "mmap-file", &path]).finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    let mmap = trace
        .position(|e| {
            e.pid == pid && matches!(&e.kind, EventKind::Mmap { len, path: Some(p), prot, error: None, .. } if *len == 64 << 20 && *p == path && prot == "r--")
        })
        .unwrap_or_else(|| panic!("no 64 MiB mmap of {path}\n{dump}"));
    let file_rss: Vec<i64> = trace.events[mmap..]
        .iter()
        .filter(|e| e.pid == pid)
        .filter_map(|e| match &e.kind {
            EventKind::Rss { member, bytes } if member == "MM_FILEPAGES" => Some(*bytes),
            _ => None,
        })
        .collect();
    let growth = file_rss.iter().max().copied().unwrap_or(0) - file_rss.first().copied().unwrap_or(0);
    assert!(file_rss.len() >= 10 && growth >= 56 << 20, "file rss after the mmap: {file_rss:?}\n{dump}");
}

/// Issue 14: the file behind an mmap is named in the kernel at the syscall. Here the
/// mapping is undone, the file renamed and its fd number reused for another file before
/// the tracer could look in /proc: the trace still names the mapped file, with the
/// device, inode and size it had.
#[test]
fn a_mapped_file_is_named_at_the_mmap_even_when_renamed_and_its_fd_reused() {
    require_root("end-to-end capture tests load eBPF programs");
    let dir = TempDir::new("mmap-hide");
    let file = dir.0.join("model.safetensors");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    let decoy = dir.0.join("tokenizer.json");
    std::fs::write(&decoy, b"{}").unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let path = file.display().to_string();
    let trace = TracerRun::start(&["run", "--grace", "200ms", "--", &stress(), "mmap-hide", &path, &decoy.display().to_string()])
        .finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    let maps: Vec<_> = trace
        .events
        .iter()
        .filter(|e| e.pid == pid)
        .filter_map(|e| match &e.kind {
            EventKind::Mmap { len, path, file, error: None, .. } if *len == 3 << 20 => Some((path.clone(), file.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(maps.len(), 1, "one 3 MiB mmap: {maps:?}\n{dump}");
    let (named, id) = &maps[0];
    assert_eq!(named.as_deref(), Some(path.as_str()), "the name at the mmap, not the decoy or the new name");
    let id = id.as_ref().expect("the kernel's identity of the file");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(id.ino, meta.ino());
    assert_eq!(id.size, 3 << 20);
    assert_eq!(id.dev, format!("{:02x}:{:02x}", libc::major(meta.dev()), libc::minor(meta.dev())));
    assert!(!id.path_cut);
}

/// A path deeper than the kernel keeps is marked cut, never made up; a file on another
/// mount (tmpfs at /dev/shm) is named across the mount.
#[test]
fn deep_paths_are_cut_visibly_and_mounts_are_crossed() {
    require_root("end-to-end capture tests load eBPF programs");
    let dir = TempDir::new("mmap-deep");
    let mut deep = dir.0.clone();
    for i in 0..20 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join("w.bin");
    std::fs::write(&file, vec![1u8; 1 << 20]).unwrap();
    let shm = std::path::PathBuf::from(format!("/dev/shm/tracer-test-{}.bin", std::process::id()));
    std::fs::write(&shm, vec![2u8; 2 << 20]).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _shm_guard = Remove(shm.clone());
    let script = format!("{s} mmap-file {} && {s} mmap-file {}", file.display(), shm.display(), s = stress());
    let trace = TracerRun::start(&["run", "--follow-children", "--grace", "200ms", "--", "sh", "-c", &script]).finish(T);
    let dump = trace.dump();
    let mapped = |len: u64| {
        trace
            .events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::Mmap { len: l, path: Some(p), file: Some(f), error: None, .. } if *l == len => Some((p.clone(), f.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no mmap of {len} bytes with a path\n{dump}"))
    };
    let (deep_path, deep_id) = mapped(1 << 20);
    assert!(deep_id.path_cut, "{deep_path}");
    assert!(deep_path.starts_with("…/") && deep_path.ends_with("/d19/w.bin"), "{deep_path}");
    assert!(file.display().to_string().ends_with(deep_path.trim_start_matches('…')), "{deep_path} is not the end of {}", file.display());
    let (shm_path, shm_id) = mapped(2 << 20);
    assert_eq!(shm_path, shm.display().to_string());
    assert!(!shm_id.path_cut);
}

#[test]
fn connect_without_listener_is_reset_no_socket_attributed_to_the_client() {
    require_root("end-to-end capture tests load eBPF programs");
    // A port with nobody listening: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", &stress(), "connect", &port.to_string()]).finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    let all = resets(&trace.events);
    let sent = all
        .iter()
        .find(|e| matches!(&e.kind, EventKind::TcpReset { direction: Direction::Sent, saddr, .. } if saddr.ends_with(&format!(":{port}"))))
        .unwrap_or_else(|| panic!("no RST from port {port}\n{dump}"));
    assert_eq!(reason(sent), Some("NO_SOCKET"), "{dump}");
    assert_eq!(sent.pid, pid, "RST NO_SOCKET not attributed to the client\n{dump}");
    assert!(
        all.iter().any(|e| e.pid == pid && matches!(&e.kind, EventKind::TcpReset { direction: Direction::Received, attributed_by: Some(a), .. } if a == "socket")),
        "client socket did not receive the reset\n{dump}"
    );
}


#[test]
fn close_with_unread_data_sends_abort_on_close() {
    require_root("end-to-end capture tests load eBPF programs");
    let (run, _out, port) = start_stress_server(&["serve-unread"], "300ms");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"unread request").unwrap();
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).expect_err("server should reset");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let trace = run.finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    let rst = resets(&trace.events)
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::TcpReset { direction: Direction::Sent, saddr, .. } if saddr.ends_with(&format!(":{port}"))))
        .unwrap_or_else(|| panic!("no RST from the server\n{dump}"));
    assert_eq!(reason(rst), Some("TCP_ABORT_ON_CLOSE"), "{dump}");
    assert_eq!(rst.pid, pid, "{dump}");
}

#[test]
fn so_linger_zero_close_resets_the_connection() {
    require_root("end-to-end capture tests load eBPF programs");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        s.read(&mut buf).map_err(|e| e.raw_os_error())
    });
    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", &stress(), "linger-client", &port.to_string()]).finish(T);
    let pid = trace.target_pid();
    let dump = trace.dump();
    assert_eq!(server.join().unwrap(), Err(Some(libc::ECONNRESET)), "peer should see a reset");
    let rst = resets(&trace.events)
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::TcpReset { direction: Direction::Sent, daddr, .. } if daddr.ends_with(&format!(":{port}"))))
        .unwrap_or_else(|| panic!("no RST from the client\n{dump}"));
    // close() with SO_LINGER {on, 0} disconnects the socket: the kernel names that reset
    // TCP_STATE (TCP_ABORT_ON_LINGER is the FIN_WAIT2 linger timeout, not this).
    assert_eq!(reason(rst), Some("TCP_STATE"), "{dump}");
    assert!(
        trace.events.iter().any(|e| e.pid == pid && matches!(&e.kind, EventKind::TcpState { old_state, new_state, .. } if old_state == "TCP_ESTABLISHED" && new_state == "TCP_CLOSE")),
        "{dump}"
    );
    // The peer's sockets are not the client's, although loopback ran them in its context.
    assert!(
        !trace.events.iter().any(|e| matches!(&e.kind, EventKind::TcpState { saddr, .. } if saddr.ends_with(&format!(":{port}")))),
        "peer socket attributed to the client\n{dump}"
    );
    assert_eq!(rst.pid, pid, "{dump}");
}

#[test]
fn server_killed_with_clients_connected_its_later_resets_are_attributed_to_it() {
    require_root("end-to-end capture tests load eBPF programs");
    let (run, mut out, port) = start_stress_server(&["serve-idle", "3"], "3s");
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    wait_for_line(&mut out, "accepted");
    let server_pid = run.traced_child();
    // SAFETY: plain syscall.
    unsafe { libc::kill(server_pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    // Talking to a dead server: its orphaned sockets answer with resets.
    for c in &mut clients {
        let _ = c.write_all(b"hello?");
    }
    std::thread::sleep(Duration::from_millis(100));
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "port still open after the server died");
    let trace = run.finish(T);
    let dump = trace.dump();
    assert_eq!(trace.target_pid(), server_pid);
    let exit = trace
        .events
        .iter()
        .find(|e| e.pid == server_pid && matches!(e.kind, EventKind::Exit { group_dead: true, .. }))
        .unwrap_or_else(|| panic!("no exit\n{dump}"));
    let after: Vec<&Event> = resets(&trace.events)
        .into_iter()
        .filter(|e| e.ts_ns > exit.ts_ns && matches!(&e.kind, EventKind::TcpReset { direction: Direction::Sent, saddr, .. } if saddr.ends_with(&format!(":{port}"))))
        .collect();
    assert!(after.len() >= 3, "expected resets from the dead server's port\n{dump}");
    for e in &after {
        assert_eq!(e.pid, server_pid, "reset not attributed to the dead server: {e:?}\n{dump}");
    }
    assert!(after.iter().any(|e| reason(e) == Some("NO_SOCKET")), "refused connect after death\n{dump}");
}

/// Runs `calls` mmap/munmap syscalls in a process traced with `--pid` and a ring buffer
/// of `ring`; returns (calls in the trace, calls counted lost).
fn mmap_burst(calls: u64, ring: &str) -> (u64, u64) {
    let trace = mmap_burst_trace(calls, ring, &[]);
    let seen = trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Mmap { len: 4096, .. } | EventKind::Munmap { len: 4096, .. }))
        .count() as u64;
    let lost = burst_lost(&trace);
    eprintln!("burst of {calls} with a {ring} ring: {seen} in the trace, {lost} lost");
    (seen, lost)
}

/// mmap/munmap records the trace lost, and a check that `trace_end` says the same.
fn burst_lost(trace: &tracer_tests::Trace) -> u64 {
    let lost: u64 = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Lost { probe, count, .. } if probe == "mmap" || probe == "munmap" => Some(*count),
            _ => None,
        })
        .sum();
    match trace.events.last().map(|e| &e.kind) {
        Some(EventKind::TraceEnd { lost, .. }) => assert_eq!(*lost, trace.lost(), "trace_end disagrees with lost events"),
        other => panic!("no trace_end: {other:?}"),
    }
    lost
}

fn mmap_burst_trace(calls: u64, ring: &str, extra: &[&str]) -> tracer_tests::Trace {
    mmap_burst_run(calls, ring, extra, "trace.jsonl").0
}

fn mmap_burst_run(calls: u64, ring: &str, extra: &[&str], file: &str) -> (tracer_tests::Trace, tracer_tests::KeptTrace) {
    held_stress_run(&["mmap-burst", &calls.to_string()], "mmap", ring, extra, file)
}

/// The stress program with `stress_args`, held at its `ready` until the tracer (`probes`,
/// a `ring` ring buffer, and `extra`) is attached; traced until it ends.
fn held_stress_run(
    stress_args: &[&str],
    probes: &str,
    ring: &str,
    extra: &[&str],
    file: &str,
) -> (tracer_tests::Trace, tracer_tests::KeptTrace) {
    let mut args = vec!["--probes", probes, "--grace", "500ms", "--ring-buffer", ring];
    args.extend_from_slice(extra);
    tracer_tests::trace_held_stress(stress_args, &args, file, Duration::from_secs(300))
}

#[test]
fn a_compressed_trace_bounded_by_max_size_keeps_the_start_and_the_latest_events() {
    require_root("end-to-end capture tests load eBPF programs");
    const CALLS: u64 = 1_000_000;
    const MAX: u64 = 1 << 20;
    let (trace, file) = mmap_burst_run(CALLS, "16MiB", &["--max-size", "1MiB"], "trace.jsonl.zst");
    let size = std::fs::metadata(&file.path).unwrap().len();
    let head = std::fs::read(&file.path).unwrap();
    assert!(head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a .zst trace is compressed");
    assert!(size <= MAX + MAX / 4, "{size} bytes for --max-size 1MiB");
    assert_eq!(trace.events.first().map(|e| e.kind_name()), Some("trace_start"));
    let Some(EventKind::TraceEnd { cut: Some(cut), .. }) = trace.events.last().map(|e| &e.kind) else {
        panic!("trace_end says nothing was cut: {:?}", trace.events.last());
    };
    let kept =
        trace.events.iter().filter(|e| matches!(e.kind, EventKind::Mmap { len: 4096, .. } | EventKind::Munmap { len: 4096, .. })).count() as u64;
    let Some(EventKind::TraceEnd { lost, .. }) = trace.events.last().map(|e| &e.kind) else { unreachable!() };
    let lost = *lost;
    eprintln!("{CALLS} calls in {size} bytes: {kept} kept, {} cut ({} bytes), {lost} lost", cut.events, cut.bytes);
    // The cut counts every event it held: the calls, and the few samples and `lost`
    // records among them (at most a few per tick).
    let accounted = kept + lost + cut.events;
    assert!((CALLS..CALLS + 500).contains(&accounted), "{kept} kept + {lost} lost + {} cut", cut.events);
    assert!(kept > 0 && cut.events > kept, "the bound keeps the end of the burst, not all of it");
    let first_kept = trace.events.iter().find(|e| matches!(e.kind, EventKind::Mmap { len: 4096, .. })).map(|e| e.ts_ns);
    assert!(first_kept.is_some_and(|ts| ts > cut.to_ns), "what is kept comes after what was cut");
    // `tracer report` reads the compressed file and says what was left out.
    let out = Command::new(tracer_tests::tracer_bin()).arg("report").arg(&file.path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{} events from", cut.events)) && text.contains("--max-size"), "{text}");
}

#[test]
fn a_storm_of_handled_signals_is_all_in_the_trace_and_what_memory_left_out_is_counted() {
    require_root("end-to-end capture tests load eBPF programs");
    const SIGNALS: u64 = 60_000;
    // The in-memory timeline keeps the newest 20k routine events, dropping the older ones
    // in batches of 10k (tracer's Timeline::ROUTINE_KEPT).
    const KEPT: std::ops::RangeInclusive<u64> = 20_000..=30_000;
    let (trace, _) = held_stress_run(&["bench", &format!("signals={SIGNALS}")], "signal", "16MiB", &[], "trace.jsonl");
    assert_eq!(trace.lost(), 0, "{}", trace.stderr);
    let target = trace.target_pid();
    let sent = trace.events.iter().filter(|e| matches!(e.kind, EventKind::Signal { signal: 10, target_pid, .. } if target_pid == target)).count() as u64;
    assert_eq!(sent, SIGNALS, "the trace file has every SIGUSR1");
    let said = trace
        .stderr
        .lines()
        .find(|l| l.contains("left out of the in-memory timeline"))
        .unwrap_or_else(|| panic!("the tracer did not say what it left out of memory:\n{}", trace.stderr));
    let dropped: u64 = said
        .split([':', ',', ';'])
        .find_map(|part| part.trim().strip_suffix(" signal")?.parse().ok())
        .unwrap_or_else(|| panic!("no signal count in {said:?}"));
    assert!(KEPT.contains(&(SIGNALS - dropped)), "{dropped} of {SIGNALS} signals left out: {said}");
}

#[test]
fn mappings_summary_counts_a_burst_exactly_in_a_few_lines() {
    require_root("end-to-end capture tests load eBPF programs");
    const CALLS: u64 = 200_000;
    let trace = mmap_burst_trace(CALLS, "16MiB", &["--mappings", "summary"]);
    let dump = || trace.dump().lines().take(40).collect::<Vec<_>>().join("\n");
    let one_by_one =
        trace.events.iter().filter(|e| matches!(e.kind, EventKind::Mmap { len: 4096, .. } | EventKind::Munmap { len: 4096, .. })).count();
    assert_eq!(one_by_one, 0, "small anonymous calls are counted, not written\n{}", dump());
    let summaries: Vec<_> = trace.events.iter().filter(|e| e.kind_name() == "memory_summary").collect();
    let (mut mmaps, mut munmaps, mut bytes) = (0u64, 0u64, 0u64);
    for s in &summaries {
        if let EventKind::MemorySummary { mmaps: m, munmaps: u, mmap_bytes, from_ns, .. } = s.kind {
            assert!(from_ns <= s.ts_ns, "a summary covers the time before it\n{}", dump());
            mmaps += m;
            munmaps += u;
            bytes += mmap_bytes;
        }
    }
    let lost = burst_lost(&trace);
    eprintln!("burst of {CALLS}: {} summaries, {mmaps} mmaps + {munmaps} munmaps counted, {lost} lost", summaries.len());
    // The stress program makes exactly CALLS/2 one-page pairs and nothing else that maps.
    assert_eq!(mmaps + munmaps + lost, CALLS, "{}", dump());
    assert!(lost > 0 || bytes == CALLS / 2 * 4096, "{bytes} bytes counted\n{}", dump());
    assert!(!summaries.is_empty() && summaries.len() < 30, "{} summaries\n{}", summaries.len(), dump());
    assert!(trace.events.len() < 200, "{} lines for a burst of {CALLS}\n{}", trace.events.len(), dump());
}

#[test]
fn mmap_burst_of_a_million_calls_is_in_the_trace_or_counted_lost() {
    require_root("end-to-end capture tests load eBPF programs");
    const CALLS: u64 = 1_000_000;
    let (seen, lost) = mmap_burst(CALLS, "16MiB");
    assert_eq!(seen + lost, CALLS, "seen {seen} + lost {lost} != {CALLS}");
}

/// /proc/sys/kernel/pid_max raised to at least a value, put back as it was on drop.
struct PidMaxAtLeast(Option<String>);

impl PidMaxAtLeast {
    const PATH: &'static str = "/proc/sys/kernel/pid_max";

    /// None where it is below and cannot be raised (a read-only /proc/sys).
    fn raise(at_least: u64) -> Option<PidMaxAtLeast> {
        let was = std::fs::read_to_string(Self::PATH).expect("read pid_max");
        if was.trim().parse::<u64>().expect("pid_max is a number") >= at_least {
            return Some(PidMaxAtLeast(None));
        }
        std::fs::write(Self::PATH, at_least.to_string()).ok()?;
        Some(PidMaxAtLeast(Some(was)))
    }
}

impl Drop for PidMaxAtLeast {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            let _ = std::fs::write(Self::PATH, was.trim());
        }
    }
}

#[test]
fn threads_beyond_the_kernel_maps_size_each_have_their_memory_calls_traced() {
    require_root("end-to-end capture tests load eBPF programs");
    // More threads, one after another, than the kernel side's per-thread map of calls in
    // flight holds (65,536): each thread's entry must go when the thread does.
    const THREADS: u64 = 70_000;
    // Thread ids wrap at pid_max (32,768 on many hosts, this one too), and a reused id
    // reuses its entry: raised for the test so that every thread has an id of its own.
    let Some(_pid_max) = PidMaxAtLeast::raise(4 * THREADS) else {
        eprintln!("SKIPPED: {} is below {} and cannot be raised here", PidMaxAtLeast::PATH, 4 * THREADS);
        return;
    };
    // A ring larger than all the test's records: a loss can only be a kernel map full.
    let (trace, _) = held_stress_run(&["thread-mmaps", &THREADS.to_string()], "mmap", "64MiB", &[], "trace.jsonl");
    let seen = trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Mmap { len: 8192, .. } | EventKind::Munmap { len: 8192, .. }))
        .count() as u64;
    let lost = burst_lost(&trace);
    assert_eq!((seen, lost), (2 * THREADS, 0), "calls seen and lost of {THREADS} threads' mmap+munmap");
}

#[test]
fn overflowing_a_small_ring_buffer_is_counted_exactly_as_lost() {
    require_root("end-to-end capture tests load eBPF programs");
    const CALLS: u64 = 200_000;
    let (seen, lost) = mmap_burst(CALLS, "8KiB");
    assert!(lost > 0, "an 8 KiB ring should overflow in a burst of {CALLS}");
    assert_eq!(seen + lost, CALLS, "seen {seen} + lost {lost} != {CALLS}");
}

#[test]
fn server_attached_with_pid_after_listen_owns_its_accepted_connections() {
    require_root("end-to-end capture tests load eBPF programs");
    let mut server = Command::new(stress_bin()).arg("serve-unread").stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let server = ChildGuard(server);
    let line = wait_for_line(&mut out, "listening ");
    let port: u16 = line["listening ".len()..].parse().unwrap();
    let run = TracerRun::start(&["--pid", &server.pid().to_string(), "--grace", "300ms"]);
    run.wait_attached(T);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"never read").unwrap();
    let mut buf = [0u8; 4];
    assert!(client.read(&mut buf).is_err(), "expected a reset");
    let trace = run.finish(T);
    let dump = trace.dump();
    let rst = resets(&trace.events)
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::TcpReset { direction: Direction::Sent, saddr, .. } if saddr.ends_with(&format!(":{port}"))))
        .unwrap_or_else(|| panic!("no reset from the server\n{dump}"));
    assert_eq!(reason(rst), Some("TCP_ABORT_ON_CLOSE"), "{dump}");
    assert_eq!(rst.pid, server.pid(), "{dump}");
    assert!(
        matches!(&rst.kind, EventKind::TcpReset { attributed_by: Some(a), .. } if a == "socket"),
        "accepted socket should be known from the listener seen at attach\n{dump}"
    );
}

/// The pid of the first process (not thread) forked in the trace, with its `traced` flag.
fn process_fork(trace: &tracer_tests::Trace, traced: bool) -> u32 {
    trace
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Fork { child_pid, thread: false, traced: t, .. } if *t == traced => Some(*child_pid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no process fork with traced={traced}\n{}", trace.dump()))
}

#[test]
fn follow_children_traces_forked_processes_and_only_then() {
    require_root("end-to-end capture tests load eBPF programs");
    let script = format!("{} exit 3; true", stress());
    let trace = TracerRun::start(&["run", "--follow-children", "--grace", "300ms", "--", "sh", "-c", &script]).finish(T);
    let dump = trace.dump();
    let child = process_fork(&trace, true);
    assert!(
        trace.events.iter().any(|e| e.pid == child && matches!(e.kind, EventKind::Exit { group_dead: true, exit_code: Some(3), .. })),
        "child's exit(3) missing\n{dump}"
    );
    assert!(trace.events.iter().any(|e| e.pid == child && matches!(&e.kind, EventKind::Exec { filename, .. } if filename.ends_with("tracer-stress"))));

    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", "sh", "-c", &script]).finish(T);
    let dump = trace.dump();
    let child = process_fork(&trace, false);
    assert!(!trace.events.iter().any(|e| e.pid == child && e.kind_name() == "exit"), "untraced child traced\n{dump}");
}

#[test]
fn ctrl_c_and_duration_stop_the_trace_and_flush_it() {
    require_root("end-to-end capture tests load eBPF programs");
    let mut run = TracerRun::start(&["run", "--", "sleep", "30"]);
    run.wait_attached(T);
    let _ = run.stdout.take();
    std::thread::sleep(Duration::from_millis(300));
    let trace = run.interrupt(T);
    assert_eq!(trace.status, Some(0), "{}", trace.dump());
    assert!(matches!(&trace.events.last().unwrap().kind, EventKind::TraceEnd { reason, .. } if reason == "interrupted"), "{}", trace.dump());
    assert!(trace.events.iter().any(|e| matches!(&e.kind, EventKind::Exec { filename, .. } if filename.ends_with("sleep"))));

    let sleeper = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let trace = TracerRun::start(&["--pid", &sleeper.pid().to_string(), "--duration", "500ms"]).finish(T);
    assert!(matches!(&trace.events.last().unwrap().kind, EventKind::TraceEnd { reason, .. } if reason == "duration"), "{}", trace.dump());
    assert_eq!(trace.target_pid(), sleeper.pid());
}

#[test]
fn bad_input_gets_one_clear_sentence_and_a_failure_status() {
    let out = Command::new(tracer_tests::tracer_bin()).args(["--pid", "999999999"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no process with pid 999999999"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = Command::new(tracer_tests::tracer_bin()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to trace"));

    let out = Command::new(tracer_tests::tracer_bin()).args(["run", "--", "/no/such/program"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if is_root() {
        assert!(!out.status.success());
        assert!(err.contains("cannot start /no/such/program"), "{err}");
    }
}

#[test]
fn without_privileges_the_error_names_the_capabilities_to_grant() {
    require_root("end-to-end capture tests load eBPF programs");
    // A copy nobody can execute wherever the checkout lives (CI may clone under /root).
    let dir = TempDir::new("unprivileged");
    let bin = dir.0.join("tracer");
    std::fs::copy(tracer_tests::tracer_bin(), &bin).unwrap();
    for p in [&dir.0, &bin] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // setpriv drops to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&bin)
        .args(["--pid", "1"])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CAP_BPF") && err.contains("sudo"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Resets of other processes on the host are counted in `trace_end`, not written: an idle
/// target, while an untraced process's connects to a closed port are refused 200 times.
#[test]
fn other_processes_resets_are_counted_not_written() {
    require_root("end-to-end capture tests load eBPF programs");
    let idle = ChildGuard(Command::new(stress()).args(["ignore-term", "idle-reset-test"]).stdout(Stdio::null()).spawn().unwrap());
    let run = TracerRun::start(&["--pid", &idle.pid().to_string(), "--no-tui", "--duration", "3s"]);
    run.wait_attached(T);
    // A port nobody listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut refused = 0;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 200, "each connect to :{port} was refused");
    let trace = run.finish(T);
    drop(idle);
    assert!(resets(&trace.events).is_empty(), "no reset of this test's process is written:\n{}", trace.dump());
    let Some(EventKind::TraceEnd { other_resets, .. }) = trace.events.last().map(|e| &e.kind) else {
        panic!("no trace_end:\n{}", trace.dump())
    };
    // Each refusal is the refusing side's reset (a reason on 6.10+, else none) and the
    // connecting side's received one; other processes may add more.
    let sent: u64 = other_resets.iter().filter(|(r, _)| *r != "received").map(|(_, n)| n).sum();
    assert!(sent >= 200, "{other_resets:?}");
    let format = std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format").unwrap_or_default();
    if format.contains("reason") {
        assert!(other_resets.get("NO_SOCKET").is_some_and(|n| *n >= 200), "{other_resets:?}");
    }
}

/// (first, last) online CPU.
fn online_cpu_range() -> (u32, u32) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    let numbers: Vec<u32> = online.trim().split([',', '-']).map(|n| n.parse().expect("a CPU number")).collect();
    (numbers[0], *numbers.last().expect("a CPU"))
}

/// `RssAnon` and `RssFile` of /proc/PID/status, in bytes.
fn proc_rss(pid: u32) -> (i64, i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb = |key: &str| -> i64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in\n{status}"));
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad {line}"))
    };
    (kb("RssAnon:") * 1024, kb("RssFile:") * 1024)
}

/// A traced `tracer-stress hold`, read once it holds still, then killed.
struct Held {
    pid: u32,
    /// When /proc was read (wall ns, as the trace's times).
    read_at: u64,
    /// [`proc_rss`] then.
    rss: (i64, i64),
    trace: tracer_tests::Trace,
}

/// Runs `tracer ARGS` (a `hold` command) with TRACER_RSS_HOOK=`hook`, reads /proc once the
/// command says `holding`, kills it and collects the trace.
fn hold_traced(args: &[&str], hook: &str) -> Held {
    let mut run = TracerRun::start_env(args, &[("TRACER_RSS_HOOK", hook)]);
    wait_for_line(run.stdout.as_mut().expect("stdout"), "holding");
    let pid = run.traced_child();
    let read_at = tracer::clock::wall_now_ns();
    let rss = proc_rss(pid);
    // SAFETY: plain syscall on the child we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    Held { pid, read_at, rss, trace: run.finish(T) }
}

/// Whether /proc/PID/status sums the per-CPU rss counters (Linux 6.16+, "mm: fix the
/// inaccurate memory statistics issue for users"); before, it shows the central count.
fn proc_rss_is_summed() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 16)
}

/// The rss probe reports the kernel's counters, with the BTF tracepoint (whose program
/// sums the per-CPU slots itself) and with the classic one. At a 4 KiB threshold every
/// change is a record, so once the process holds still its last record per member is the
/// count /proc/PID/status shows. Pinned to the first and the last CPU, so that a wrong
/// per-CPU offset for either shows. The memory an exit tears down is not the process
/// growing or shrinking: no record after the kill.
#[test]
fn rss_records_are_the_kernels_counters_with_either_hook_on_every_cpu() {
    require_root("end-to-end capture tests load eBPF programs");
    let btf = tracer::capture::btf::rss_counter_layout(tracer::capture::btf::running_kernel_structs().as_ref()).is_complete();
    if !btf {
        eprintln!("SKIPPED (BTF half): this kernel has no per-CPU rss counters in its BTF, so the rss probe uses the classic tracepoint");
    }
    let summed = proc_rss_is_summed();
    if !summed {
        eprintln!("SKIPPED (exact comparison): this kernel's /proc/PID/status shows the central rss count, not the sum (before 6.16)");
    }
    let (first, last) = online_cpu_range();
    for (hook, label) in [("btf", if btf { "kmem:rss_stat (BTF)" } else { "kmem:rss_stat" }), ("classic", "kmem:rss_stat")] {
        for cpu in [first, last] {
            let cpu_arg = cpu.to_string();
            let held = hold_traced(
                &["run", "--rss-threshold", "4KiB", "--grace", "200ms", "--", "taskset", "-c", &cpu_arg, &stress(), "hold", "24"],
                hook,
            );
            let (pid, read_at, (anon, file), trace) = (held.pid, held.read_at, held.rss, held.trace);
            let dump = trace.dump();
            let start = trace.of_kind("trace_start").next().unwrap_or_else(|| panic!("no trace_start\n{dump}"));
            let EventKind::TraceStart { probes, .. } = &start.kind else { unreachable!() };
            assert!(probes.iter().any(|p| p == label), "TRACER_RSS_HOOK={hook}: want {label} in {probes:?}");
            let last_of = |want: &str| {
                trace.events.iter().rev().filter(|e| e.pid == pid && e.ts_ns < read_at).find_map(|e| match &e.kind {
                    EventKind::Rss { member, bytes } if member == want => Some(*bytes),
                    _ => None,
                })
            };
            let after: Vec<&tracer::event::Event> =
                trace.events.iter().filter(|e| e.pid == pid && e.ts_ns >= read_at && matches!(e.kind, EventKind::Rss { .. })).collect();
            assert!(after.is_empty(), "{hook} hook on CPU {cpu}: records of the exit's teardown: {after:?}");
            if summed {
                assert_eq!(last_of("MM_ANONPAGES"), Some(anon), "{hook} hook on CPU {cpu}: last anon record vs RssAnon\n{dump}");
                assert_eq!(last_of("MM_FILEPAGES"), Some(file), "{hook} hook on CPU {cpu}: last file record vs RssFile\n{dump}");
            }
        }
        // At the default 8 MiB the BTF program reads the slots only near the threshold:
        // still a record each time the count moved by 8 MiB, and none in between.
        let held = hold_traced(&["run", "--grace", "200ms", "--", &stress(), "hold", "100"], hook);
        let (pid, read_at, (anon, _), trace) = (held.pid, held.read_at, held.rss, held.trace);
        // From the exec on: before it the child is a copy of the tracer, another mm.
        let exec = trace.position(|e| e.pid == pid && matches!(e.kind, EventKind::Exec { .. })).expect("the exec of the command");
        let records: Vec<i64> = trace.events[exec..]
            .iter()
            .filter(|e| e.pid == pid && e.ts_ns < read_at)
            .filter_map(|e| match &e.kind {
                EventKind::Rss { member, bytes } if member == "MM_ANONPAGES" => Some(*bytes),
                _ => None,
            })
            .collect();
        const STEP: i64 = 8 << 20;
        assert!(records.len() >= 10, "{hook}: 100 MiB touched in 8 MiB steps gave {records:?}");
        for pair in records.windows(2) {
            assert!((pair[1] - pair[0]).abs() >= STEP, "{hook}: records closer than 8 MiB: {records:?}");
        }
        let last = *records.last().expect("a record");
        assert!((anon - last).abs() < STEP, "{hook}: RssAnon {anon} is 8 MiB or more from the last record {last}: {records:?}");
    }
}


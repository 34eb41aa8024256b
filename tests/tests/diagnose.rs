//! Verdicts on the real kernel: each cause of a reset (or of a death) produced for real
//! under `tracer run`, and the verdict the tracer wrote at the end of its trace names the
//! right cause and the right process. Root; one at a time.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use tracer::diagnose::{Cause, Verdict};
use tracer_tests::{require_root, start_stress_server, stress, wait_for_line, ChildGuard, Memcg, Trace, TracerRun};

const T: Duration = Duration::from_secs(60);



fn show(trace: &Trace) -> String {
    let verdicts: Vec<String> = trace.verdicts.iter().map(tracer::diagnose::describe).collect();
    format!("verdicts:\n{}\n{}", verdicts.join("\n"), trace.dump())
}

/// The one verdict with `cause`, which must be about `pid`.
fn verdict(trace: &Trace, cause: Cause, pid: u32) -> &Verdict {
    let found: Vec<&Verdict> = trace.verdicts.iter().filter(|v| v.cause == cause).collect();
    assert_eq!(found.len(), 1, "expected one {cause:?} verdict\n{}", show(trace));
    assert_eq!(found[0].pid, Some(pid), "{cause:?} verdict about the wrong process\n{}", show(trace));
    assert!(!found[0].chain.is_empty(), "a verdict without a chain\n{}", show(trace));
    found[0]
}


#[test]
fn oom_kill_in_a_memcg_is_the_verdict_with_the_limit_that_was_hit() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let cg = Memcg::new("diag-oom", 64 << 20).expect("memory cgroup");
    let cgroup = cg.path.display().to_string();
    let trace = TracerRun::start(&["run", "--grace", "500ms", "--", &stress(), "alloc", "--cgroup", &cgroup]).finish(T);
    let pid = trace.target_pid();
    let v = verdict(&trace, Cause::OomKilled, pid);
    assert_eq!(v.resets, 0);
    assert!(v.summary.contains("OOM-killed"), "{}", show(&trace));
    assert!(v.summary.contains("memory cgroup limit (64.0 MiB)") || v.summary.contains("64.00 MiB"), "limit not named\n{}", show(&trace));
    let kinds: Vec<&str> = v.chain.iter().map(|l| l.kind.as_str()).collect();
    assert!(kinds.contains(&"oom_kill") && kinds.contains(&"exit"), "{kinds:?}\n{}", show(&trace));
    assert!(trace.stderr.contains("OOM-killed"), "verdict not printed at the end:\n{}", trace.stderr);
}

#[test]
fn sigkill_from_another_process_names_the_sender_and_explains_the_resets() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let (run, mut out, port) = start_stress_server(&["serve-idle", "3"], "2s");
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    wait_for_line(&mut out, "accepted");
    let server = run.traced_child();
    let kill = Command::new("kill").args(["-KILL", &server.to_string()]).spawn().unwrap();
    let killer = kill.id();
    assert!(ChildGuard(kill).0.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut clients {
        let _ = c.write_all(b"anyone?");
    }
    let _ = TcpStream::connect(("127.0.0.1", port));
    let trace = run.finish(T);
    let v = verdict(&trace, Cause::KilledBySignal, server);
    assert!(v.summary.contains("SIGKILL") && v.summary.contains(&killer.to_string()), "sender not named\n{}", show(&trace));
    assert!(v.resets >= 3, "resets after the kill not related to it\n{}", show(&trace));
    assert_eq!(v.port, Some(port), "{}", show(&trace));
    assert!(!trace.verdicts.iter().any(|v| v.cause == Cause::OomKilled), "{}", show(&trace));
}

#[test]
fn sigsegv_is_a_crash_even_without_resets() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let trace = TracerRun::start(&["run", "--grace", "200ms", "--", &stress(), "segv"]).finish(T);
    let pid = trace.target_pid();
    let v = verdict(&trace, Cause::Crashed, pid);
    assert!(v.summary.contains("SIGSEGV"), "{}", show(&trace));
    assert_eq!(v.resets, 0);
}

#[test]
fn exit_code_3_with_a_client_connected_is_the_cause_of_its_reset() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let (run, _out, port) = start_stress_server(&["serve-exit", "3"], "300ms");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"request nobody reads").unwrap();
    let mut buf = [0u8; 8];
    let err = client.read(&mut buf).expect_err("the exiting server resets");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let trace = run.finish(T);
    let server = trace.target_pid();
    let v = verdict(&trace, Cause::Exited, server);
    assert!(v.summary.contains('3'), "exit code not named\n{}", show(&trace));
    assert!(v.resets >= 1, "{}", show(&trace));
}

#[test]
fn close_with_unread_data_is_abort_on_close_by_the_live_server() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let (run, _out, port) = start_stress_server(&["serve-unread"], "300ms");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"unread request").unwrap();
    let mut buf = [0u8; 16];
    assert!(client.read(&mut buf).is_err());
    let trace = run.finish(T);
    let server = trace.target_pid();
    let v = verdict(&trace, Cause::AbortOnClose, server);
    assert_eq!(v.port, Some(port), "{}", show(&trace));
    assert!(v.resets >= 1);
}

#[test]
fn so_linger_zero_is_named_for_the_client_that_set_it() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        let _ = s.read(&mut buf);
    });
    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", &stress(), "linger-client", &port.to_string()]).finish(T);
    peer.join().unwrap();
    let client = trace.target_pid();
    let v = verdict(&trace, Cause::LingerZero, client);
    assert_eq!(v.port, Some(port), "the service port is the peer's\n{}", show(&trace));
}

#[test]
fn connect_to_a_port_nobody_listens_on_is_refused() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", &stress(), "connect", &port.to_string()]).finish(T);
    let client = trace.target_pid();
    let v = verdict(&trace, Cause::ConnectionRefused, client);
    assert_eq!(v.port, Some(port), "{}", show(&trace));
    assert!(!trace.verdicts.iter().any(|v| v.cause == Cause::Unexplained), "{}", show(&trace));
}

/// Issue 14: a Python MemoryError under an address-space limit exits with code 1; the
/// verdict names the refused allocations and the limit, and is not an OOM kill.
#[test]
fn an_exit_after_refused_allocations_names_them_and_the_address_space_limit() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    let script = "ulimit -v 409600; exec python3 -c 'chunks = []\nwhile True: chunks.append(bytearray(16 << 20))'";
    let trace = TracerRun::start(&["run", "--grace", "300ms", "--", "sh", "-c", script]).finish(T);
    let pid = trace.target_pid();
    let v = verdict(&trace, Cause::Exited, pid);
    assert!(v.summary.contains("exited with code 1 after"), "{}", show(&trace));
    assert!(v.summary.contains("failed with ENOMEM"), "{}", show(&trace));
    // The limit as the kernel has it: 409600 KiB.
    assert!(v.summary.contains("address-space limit (RLIMIT_AS) was 400 MiB"), "{}", show(&trace));
    assert!(v.evidence.iter().any(|e| e.contains("not an OOM kill")), "{}", show(&trace));
    assert!(!trace.verdicts.iter().any(|v| v.cause == Cause::OomKilled), "{}", show(&trace));
}

#[test]
fn a_reset_storm_past_the_in_memory_bound_gets_the_verdicts_of_the_whole_trace() {
    require_root("end-to-end diagnosis tests load eBPF programs");
    // 8,000 loopback connections closed with SO_LINGER 0: 48,000 state changes, more than
    // the live timeline keeps of them (the newest 20k routine ones, see tracer's
    // Timeline::ROUTINE_KEPT). `tracer report` reads the whole file: the verdicts the
    // tracer wrote live must be the ones the whole trace gives.
    let (trace, file) =
        tracer_tests::trace_held_stress(&["bench", "rst=8000"], &["--grace", "1s"], "trace.jsonl", Duration::from_secs(120));
    assert!(
        trace.stderr.contains("left out of the in-memory timeline") && trace.stderr.contains(" tcp_state"),
        "the storm stayed within the bound, so this test shows nothing:\n{}",
        trace.stderr
    );
    let out = Command::new(tracer_tests::tracer_bin()).args(["report", "--format", "json"]).arg(&file.path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let whole: Vec<(String, u64, u64)> = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["cause"].as_str().unwrap_or("").to_string(), v["pid"].as_u64().unwrap_or(0), v["resets"].as_u64().unwrap_or(0)))
        .collect();
    let live: Vec<(String, u64, u64)> = trace
        .verdicts
        .iter()
        .map(|v| {
            let cause = serde_json::to_value(v.cause).unwrap().as_str().unwrap_or("").to_string();
            (cause, v.pid.unwrap_or(0) as u64, v.resets)
        })
        .collect();
    assert!(!live.is_empty(), "no verdict on a reset storm\n{}", show(&trace));
    assert_eq!(live, whole, "live verdicts differ from the whole trace's\n{}", show(&trace));
}

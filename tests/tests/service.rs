//! A service rather than one pid: `--follow-restarts` on the real kernel with a real
//! supervisor (a shell loop that starts the server again each time it dies), the end of
//! the wait when nobody restarts it, and the options that make no sense refused. Root.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer::event::EventKind;
use tracer_tests::{require_root, stress, tracer_bin, ChildGuard, TracerRun};

const T: Duration = Duration::from_secs(60);

/// The supervisor and everything it started, killed when the test ends, even on failure.
struct Supervisor(ChildGuard);

impl Drop for Supervisor {
    fn drop(&mut self) {
        for p in tracer::process::descendants(self.0.pid()) {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
}

/// The Python environment from PyPI, or `None` after saying loudly why `test` is skipped.
fn python_or_skip(test: &str) -> Option<std::path::PathBuf> {
    match tracer_tests::python::venv() {
        Ok(v) => Some(v),
        Err(why) => {
            eprintln!("\n*** SKIPPED {test}: {why}\n");
            None
        }
    }
}

/// The first child of `parent` running `comm`, waited for.
fn child_named(parent: u32, comm: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for c in tracer::process::descendants(parent) {
            if std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == comm) {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "no {comm} under pid {parent}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_restarted_by_a_shell_loop_is_followed_and_its_deaths_are_one_crash_loop() {
    require_root("end-to-end tests load eBPF programs");
    // The server lives 0.8 s, is killed, and the loop starts it again 0.2 s later.
    // A tag of its own in the arguments: the same program with other arguments, run by
    // the other tests at the same time, is no successor of this one.
    let script = format!("while :; do {} ignore-term restart-test-$$ >/dev/null & p=$!; sleep 0.8; kill -9 $p; wait $p; sleep 0.2; done", stress());
    let sup = Supervisor(ChildGuard(Command::new("sh").args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()));
    let first = child_named(sup.0.pid(), "tracer-stress");
    let trace = TracerRun::start(&["--pid", &first.to_string(), "--follow-restarts", "--restart-wait", "5s", "--duration", "4s", "--no-tui"])
        .finish(T);
    let dump = trace.dump();
    let restarts: Vec<(u32, u32, u64, Option<u32>)> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Restart { old_pid, new_pid, gap_ns, parent_pid, .. } => Some((*old_pid, *new_pid, *gap_ns, *parent_pid)),
            _ => None,
        })
        .collect();
    assert!(restarts.len() >= 2, "at least two restarts in 4 s: {restarts:?}\n{dump}");
    assert_eq!(restarts[0].0, first, "{restarts:?}");
    for pair in restarts.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "each restart follows the one before: {restarts:?}");
    }
    for (k, (_, new, gap, parent)) in restarts.iter().enumerate() {
        assert_eq!(*parent, Some(sup.0.pid()), "the shell loop started pid {new}");
        // sleep 0.2 between the kill and the next start; well under the wait.
        assert!((100_000_000..2_000_000_000).contains(gap), "gap {gap} ns\n{dump}");
        if k + 1 == restarts.len() {
            break; // the trace may end before the last one did anything
        }
        // Traced from its exec on: the dynamic loader's first mappings (libc, a few
        // hundred microseconds after the exec) are in the trace.
        assert!(
            trace.events.iter().any(|e| e.pid == *new && matches!(&e.kind, EventKind::Exec { .. })),
            "no exec of pid {new}\n{dump}"
        );
        assert!(
            trace.events.iter().any(|e| e.pid == *new
                && matches!(&e.kind, EventKind::Mmap { path: Some(p), .. } if p.contains("libc"))),
            "pid {new} was not traced from its exec: the loader's mapping of libc is missing\n{dump}"
        );
        // The successor is traced: its own death is in the trace.
        assert!(
            trace.events.iter().any(|e| e.pid == *new && matches!(e.kind, EventKind::Exit { group_dead: true, .. }))
                || trace.events.iter().any(|e| e.pid == *new && matches!(e.kind, EventKind::Sample { .. })),
            "pid {new} is not traced\n{dump}"
        );
    }
    let loops: Vec<_> = trace.verdicts.iter().filter(|v| v.cause.as_str() == "crash_loop").collect();
    assert_eq!(loops.len(), 1, "{:#?}", trace.verdicts);
    let s = &loops[0].summary;
    assert!(s.contains(&format!("started again by sh[{}]", sup.0.pid())), "{s}");
    assert!(s.contains("each time it was killed by a signal"), "{s}");
    assert!(s.contains("a person or a script sent it"), "{s}");
    assert!(!trace.verdicts.iter().any(|v| v.cause.as_str() == "killed_by_signal"), "deaths are grouped: {:#?}", trace.verdicts);
    eprintln!("verdict: {s}");
}

#[test]
fn no_successor_in_time_ends_the_trace_with_no_restart() {
    require_root("end-to-end tests load eBPF programs");
    let server = ChildGuard(Command::new(stress()).arg("ignore-term").stdout(Stdio::null()).spawn().unwrap());
    let pid = server.pid();
    let run = TracerRun::start(&["--pid", &pid.to_string(), "--follow-restarts", "--restart-wait", "1s", "--no-tui"]);
    run.wait_attached(T);
    server.signal(libc::SIGKILL);
    let started = Instant::now();
    let trace = run.finish(T);
    let end = trace.events.last().map(|e| e.kind.clone());
    assert!(matches!(&end, Some(EventKind::TraceEnd { reason, .. }) if reason == "no_restart"), "{end:?}\n{}", trace.dump());
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited for a successor");
    drop(server);
}

#[test]
fn follow_restarts_with_run_is_refused_in_one_sentence() {
    let out = Command::new(tracer_bin()).args(["run", "--follow-restarts", "--no-tui", "--", "true"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracer --pid PID --follow-restarts"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--cgroup`: the processes in the cgroup at the start, and one that joins it while the
/// trace runs (as a supervisor outside the cgroup would move a new process in), are all
/// traced; removing the cgroup ends the trace.
#[test]
fn a_cgroup_scope_traces_its_processes_and_those_that_join_it() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    let cg = tracer_tests::Memcg::new("scope", 256 << 20).unwrap();
    let first = ChildGuard(cg.command(std::path::Path::new(&stress())).arg("ignore-term").stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cg.procs().contains(&(first.pid() as i32)) {
        assert!(Instant::now() < deadline, "the first process never joined {}", cg.path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = cg.path.display().to_string();
    let run = TracerRun::start(&["--cgroup", &path, "--no-tui", "--sample-interval", "100ms"]);
    run.wait_attached(T);
    // Joins from outside and execs at once a program that exits with 3: too soon for
    // any listing of the cgroup, so only the kernel's check of the move catches it.
    let script = format!("echo $$ > {path}/cgroup.procs; exec {} exit 3", stress());
    let mut joiner = ChildGuard(Command::new("sh").args(["-c", &script]).stdout(Stdio::null()).spawn().unwrap());
    let joined = joiner.pid();
    let status = joiner.wait_timeout(Duration::from_secs(10)).expect("the joiner ends");
    assert_eq!(status.code(), Some(3));
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    drop(cg); // kills what is left and removes the cgroup: the trace ends
    let trace = run.finish(T);
    let dump = trace.dump();
    let start = trace.events.first().map(|e| e.kind.clone());
    assert!(matches!(&start, Some(EventKind::TraceStart { target_cmdline, follow_children: true, .. }) if target_cmdline.starts_with(&format!("cgroup {path} (1 processes"))), "{start:?}");
    assert!(
        trace.events.iter().any(|e| e.pid == joined && matches!(&e.kind, EventKind::Exec { filename, .. } if filename.ends_with("tracer-stress"))),
        "the process that joined is traced from its exec\n{dump}"
    );
    assert!(
        trace.events.iter().any(|e| e.pid == joined && matches!(e.kind, EventKind::Exit { group_dead: true, exit_code: Some(3), .. })),
        "{dump}"
    );
    let end = trace.events.last().map(|e| e.kind.clone());
    assert!(matches!(&end, Some(EventKind::TraceEnd { reason, .. }) if reason == "cgroup_removed"), "{end:?}\n{dump}");
}

/// A unit's cgroup folder, made by hand where systemd would make it (no systemd runs
/// here: `--unit` then finds the folder in the usual slices). Removed on drop.
struct UnitCgroup {
    dir: std::path::PathBuf,
    made_slice: Option<std::path::PathBuf>,
}

impl UnitCgroup {
    fn new(unit: &str) -> UnitCgroup {
        let root = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|r| r.join("cgroup.procs").is_file())
            .expect("a cgroup hierarchy to make a unit's folder in");
        let slice = root.join("system.slice");
        let made_slice = (!slice.exists()).then(|| slice.clone());
        std::fs::create_dir_all(slice.join(unit)).unwrap();
        UnitCgroup { dir: slice.join(unit), made_slice }
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        // Its processes are the test's ChildGuards, gone before this drop.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(s) = &self.made_slice {
            let _ = std::fs::remove_dir(s);
        }
    }
}

/// `--unit NAME` traces the unit's cgroup: without systemd running, its folder in the
/// usual slice is found by name.
#[test]
fn a_unit_is_traced_through_its_cgroup() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    let unit = format!("tracer-unit-{}", std::process::id());
    let cg = UnitCgroup::new(&format!("{unit}.service"));
    let member = ChildGuard(Command::new(stress()).args(["ignore-term", &unit]).stdout(Stdio::null()).spawn().unwrap());
    std::fs::write(cg.dir.join("cgroup.procs"), member.pid().to_string()).unwrap();
    let trace = TracerRun::start(&["--unit", &unit, "--duration", "1s", "--no-tui"]).finish(T);
    drop(member);
    let start = trace.events.first().map(|e| e.kind.clone());
    let want = format!("cgroup {} (1 processes: {} tracer-stress)", cg.dir.display(), trace.target_pid());
    assert!(matches!(&start, Some(EventKind::TraceStart { target_cmdline, .. }) if *target_cmdline == want), "{start:?}, want {want}");
    drop(cg);
}

#[test]
fn bad_scopes_are_refused_in_one_sentence() {
    for args in [
        vec!["--cgroup", "/nonexistent/cgroup"],
        vec!["--cgroup", "/tmp"],
        vec!["--unit", "tracer-no-such-unit"],
        vec!["--cgroup", "/sys/fs/cgroup", "--pid", "1"],
        vec!["run", "--cgroup", "/sys/fs/cgroup", "--", "true"],
    ] {
        let out = Command::new(tracer_bin()).args(&args).arg("--no-tui").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!err.trim().is_empty() && err.lines().filter(|l| !l.trim().is_empty()).count() <= 4, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A server with oom_score_adj 1000 shares a memory cgroup with an unrelated process
/// (not its child) that grows until the limit: the kernel kills the server, and the
/// verdict names the process that ate the memory.
#[test]
fn the_neighbour_that_ate_the_memory_is_named() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    let cg = tracer_tests::Memcg::new("neighbour", 96 << 20).unwrap();
    // The server holds 16 MiB: with oom_score_adj 1000 it outranks the grower by far.
    let server = ChildGuard(cg.command(std::path::Path::new(&stress())).args(["hold", "16"]).stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cg.procs().contains(&(server.pid() as i32)) {
        assert!(Instant::now() < deadline, "the server never joined {}", cg.path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(format!("/proc/{}/oom_score_adj", server.pid()), "1000").unwrap();
    let run = TracerRun::start(&["--pid", &server.pid().to_string(), "--no-tui", "--sample-interval", "50ms", "--grace", "500ms"]);
    run.wait_attached(T);
    let path = cg.path.display().to_string();
    let grower = ChildGuard(Command::new(stress()).args(["alloc", "--cgroup", &path]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let grower_pid = grower.pid();
    let trace = run.finish(T);
    drop(grower);
    drop(server);
    drop(cg);
    let v: Vec<_> = trace.verdicts.iter().filter(|v| v.cause.as_str() == "oom_killed").collect();
    assert_eq!(v.len(), 1, "{:#?}\n{}", trace.verdicts, trace.dump());
    let s = &v[0].summary;
    assert!(s.contains(&format!("the memory went to pid {grower_pid} (tracer-stress)")), "{s}");
    assert!(s.contains("its oom_score_adj is 1000"), "{s}");
    eprintln!("verdict: {s}");
}

/// gunicorn with uvicorn workers, each loading a 150 MiB "model", in a memory cgroup
/// where two workers do not fit: the kernel OOM-kills workers, the master respawns them,
/// and the verdict is one crash loop naming the master.
#[test]
fn gunicorn_workers_oom_killed_and_respawned_are_one_crash_loop() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    let Some(venv) = python_or_skip("gunicorn_workers_oom_killed_and_respawned_are_one_crash_loop") else { return };
    let cg = tracer_tests::Memcg::new("gunicorn", 260 << 20).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gunicorn = venv.join("bin/gunicorn").display().to_string();
    let apps = tracer_tests::python::apps_dir().display().to_string();
    let cg_path = cg.path.display().to_string();
    let bind = format!("127.0.0.1:{port}");
    let trace = TracerRun::start(&[
        "run", "--follow-children", "--duration", "10s", "--no-tui", "--", "/bin/sh", "-c", tracer_tests::Memcg::JOIN_AND_EXEC, &cg_path,
        "/usr/bin/env", "MODEL_MIB=150", &gunicorn, "--workers", "2", "--worker-class", "uvicorn.workers.UvicornWorker", "--bind", &bind,
        "--chdir", &apps, "--log-level", "warning", "model_app:app",
    ])
    .finish(T);
    drop(cg);
    let dump = trace.dump();
    let victims: std::collections::BTreeSet<u32> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OomKill { victim_pid: Some(p), .. } => Some(*p),
            _ => None,
        })
        .collect();
    assert!(victims.len() >= 2, "at least two workers OOM-killed: {victims:?}\n{dump}");
    let loops: Vec<_> = trace.verdicts.iter().filter(|v| v.cause.as_str() == "crash_loop").collect();
    assert_eq!(loops.len(), 1, "{:#?}\n{dump}", trace.verdicts);
    let s = &loops[0].summary;
    assert!(s.contains("each time it was OOM-killed"), "{s}");
    let master = trace.target_pid();
    assert!(s.contains(&format!("started again by gunicorn[{master}]")), "{s}");
    eprintln!("verdict: {s}");
}

/// A Python server (`grow_server.py`) in a memory cgroup of its own, listening, and the
/// `requests` client (`client.py`) polling it for `seconds` under `tracer run`, 1.5 s in.
struct ClientAndServer {
    cg: tracer_tests::Memcg,
    server: ChildGuard,
    port: u16,
    run: TracerRun,
}

/// [`ClientAndServer`], or `None` after saying loudly why `test` is skipped.
fn client_and_server(test: &str, cg_name: &str, limit: u64, seconds: &str) -> Option<ClientAndServer> {
    let venv = python_or_skip(test)?;
    let apps = tracer_tests::python::apps_dir();
    let python = venv.join("bin/python").display().to_string();
    let cg = tracer_tests::Memcg::new(cg_name, limit).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = ChildGuard(
        cg.command(std::path::Path::new(&python)).arg(apps.join("grow_server.py")).arg(port.to_string()).stdout(Stdio::null()).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let client_py = apps.join("client.py").display().to_string();
    let run = TracerRun::start(&["run", "--no-tui", "--grace", "500ms", "--", &python, &client_py, &url, seconds]);
    run.wait_attached(T);
    std::thread::sleep(Duration::from_millis(1500));
    Some(ClientAndServer { cg, server, port, run })
}

/// The client's side: `requests` traced while the server it talks to on this host is
/// OOM-killed. The tracer names the server at the client's first connect and traces it;
/// the client's verdict says whose the address was and what became of it.
#[test]
fn a_requests_client_learns_its_server_was_oom_killed() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    let Some(ClientAndServer { cg, server, port, run }) =
        client_and_server("a_requests_client_learns_its_server_was_oom_killed", "client", 128 << 20, "4")
    else {
        return;
    };
    // The server grows until the kernel kills it.
    let mut grow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut grow, b"GET /grow HTTP/1.0\r\n\r\n").unwrap();
    let trace = run.finish(T);
    drop(grow);
    let server_pid = server.pid();
    drop(server);
    drop(cg);
    let dump = trace.dump();
    assert!(
        trace.events.iter().any(|e| matches!(&e.kind, EventKind::Peer { owner_pid, .. } if *owner_pid == server_pid)),
        "no peer event naming the server {server_pid}\n{dump}"
    );
    let client = trace.target_pid();
    let about: Vec<_> = trace.verdicts.iter().filter(|v| v.pid == Some(client)).collect();
    let fate = format!("127.0.0.1:{port} belonged to pid {server_pid} (python");
    let named = about.iter().find(|v| v.summary.contains(&fate) && v.summary.contains("OOM-killed"));
    assert!(named.is_some(), "no client verdict names the server's OOM kill: {:#?}\n{dump}", trace.verdicts);
    eprintln!("verdict: {}", named.map(|v| v.summary.as_str()).unwrap_or_default());
}

/// The `requests` client traced while a shell kills its server with SIGKILL: the client's
/// verdict names the server, the signal and who sent it; the server, untraced, gets no
/// verdict of its own.
#[test]
fn a_requests_client_learns_who_killed_its_server() {
    require_root("end-to-end tests load eBPF programs and create cgroups");
    // The server's cgroup only makes sure it is gone at the end, whatever happens.
    let Some(ClientAndServer { cg, server, port, run }) =
        client_and_server("a_requests_client_learns_who_killed_its_server", "client-kill", 256 << 20, "3")
    else {
        return;
    };
    let server_pid = server.pid();
    // The shell stays a moment, as one a person types in does: who started it is read
    // from /proc while it runs.
    let killer = Command::new("sh").args(["-c", &format!("kill -9 {server_pid}; echo $$; sleep 1")]).output().unwrap();
    let shell: u32 = String::from_utf8_lossy(&killer.stdout).trim().parse().unwrap();
    let trace = run.finish(T);
    drop(server);
    drop(cg);
    let dump = trace.dump();
    let client = trace.target_pid();
    let about: Vec<_> = trace.verdicts.iter().filter(|v| v.pid == Some(client)).collect();
    let fate = format!("127.0.0.1:{port} belonged to pid {server_pid} (python");
    // `kill` is the shell's builtin: the shell sent it.
    let named = about.iter().find(|v| v.summary.contains(&fate) && v.summary.contains(&format!("sent SIGKILL by sh[{shell}]")));
    assert!(named.is_some(), "no client verdict names the kill of the server by sh[{shell}]: {:#?}\n{dump}", trace.verdicts);
    assert!(named.is_some_and(|v| v.summary.contains(&format!("(sh[{shell}] was started by"))), "{:#?}", trace.verdicts);
    assert!(!trace.verdicts.iter().any(|v| v.pid == Some(server_pid)), "the server is not traced: {:#?}", trace.verdicts);
    eprintln!("verdict: {}", named.map(|v| v.summary.as_str()).unwrap_or_default());
}

/// A gunicorn worker whose model load blocks longer than `--timeout`: the master kills
/// it (SIGABRT, then SIGKILL), respawns it, and kills it again. The verdict names the
/// master and its timeout; nothing is an OOM kill.
#[test]
fn a_gunicorn_worker_past_its_timeout_is_killed_by_the_master_not_by_memory() {
    require_root("end-to-end tests load eBPF programs");
    let Some(venv) = python_or_skip("a_gunicorn_worker_past_its_timeout_is_killed_by_the_master_not_by_memory") else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gunicorn = venv.join("bin/gunicorn").display().to_string();
    let apps = tracer_tests::python::apps_dir().display().to_string();
    let bind = format!("127.0.0.1:{port}");
    // In a cgroup of its own only so that everything gunicorn starts is gone at the end.
    let cg = tracer_tests::Memcg::new("gunicorn-timeout", 1 << 30).unwrap();
    let cg_path = cg.path.display().to_string();
    let run = TracerRun::start(&[
        "run", "--follow-children", "--duration", "10s", "--no-tui", "--", "/bin/sh", "-c", tracer_tests::Memcg::JOIN_AND_EXEC, &cg_path,
        "/usr/bin/env", "MODEL_MIB=1", &gunicorn, "--workers", "1",
        "--timeout", "2", "--worker-class", "uvicorn.workers.UvicornWorker", "--bind", &bind, "--chdir", &apps, "--log-level", "warning",
        "model_app:app",
    ]);
    // Once the worker answers, ask it to load: its event loop blocks past the timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut load = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut health = String::new();
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut health);
            if health.contains("200 OK") {
                let mut l = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                l.write_all(b"GET /load HTTP/1.0\r\n\r\n").unwrap();
                break l;
            }
        }
        assert!(Instant::now() < deadline, "gunicorn never answered on {port}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let trace = run.finish(T);
    drop(cg);
    let _ = std::io::Read::read(&mut load, &mut [0u8; 64]);
    let dump = trace.dump();
    let master = trace.target_pid();
    // Other tests OOM-kill their own processes meanwhile: none of this trace's is.
    assert!(!trace.events.iter().any(|e| matches!(e.kind, EventKind::OomKill { is_target: true, .. })), "no OOM kill\n{dump}");
    let aborts = trace
        .events
        .iter()
        .filter(|e| e.pid == master && matches!(&e.kind, EventKind::Signal { signal_name, .. } if signal_name == "SIGABRT"))
        .count();
    assert!(aborts >= 1, "the master sent SIGABRT\n{dump}");
    let named: Vec<&str> = trace
        .verdicts
        .iter()
        .map(|v| v.summary.as_str())
        .filter(|s| s.contains(&format!("from pid {master} (gunicorn)")) && s.contains("misses --timeout"))
        .collect();
    assert!(!named.is_empty(), "no verdict names the master and its timeout: {:#?}\n{dump}", trace.verdicts);
    eprintln!("verdict: {}", named[0]);
}

/// `run --duration` leaves the command running (it is the user's), unless
/// `--kill-on-exit`: then it is stopped, and its end is in the trace.
#[test]
fn kill_on_exit_stops_the_command_when_the_duration_is_up() {
    require_root("end-to-end tests load eBPF programs");
    let tag = format!("kill-on-exit-{}", std::process::id());
    let trace = TracerRun::start(&["run", "--no-tui", "-d", "1s", "--kill-on-exit", "--", &stress(), "ignore-term", &tag]).finish(T);
    let pid = trace.target_pid();
    assert!(!tracer::process::process_exists(pid), "pid {pid} still runs after --kill-on-exit");
    // ignore-term ignores SIGTERM: the SIGKILL 2 s later ended it, and the trace says so.
    assert!(
        trace.events.iter().any(|e| e.pid == pid && matches!(e.kind, EventKind::Exit { group_dead: true, signal: Some(9), .. })),
        "{}",
        trace.dump()
    );

    let kept = TracerRun::start(&["run", "--no-tui", "-d", "1s", "--", &stress(), "ignore-term", &tag]).finish(T);
    let pid = kept.target_pid();
    let alive = tracer::process::process_exists(pid);
    // SAFETY: plain syscall; the test's own child, left running by design.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(alive, "without --kill-on-exit the command keeps running");
}

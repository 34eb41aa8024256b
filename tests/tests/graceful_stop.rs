//! The fixed server stops without resetting anyone: 16 translations in flight, then
//! SIGTERM, as a user stopping the service would. Every client gets a whole HTTP answer
//! (the in-flight ones 200, anything that was still queued 503), a connect after the stop
//! is refused while the server finishes, the server exits 0, and the tracer's trace of
//! the server holds no reset it sent. Root (the tracer).
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use tracer::event::EventKind;
use tracer_tests::{require_root, workload_bin, TempDir, TracerRun};
use workload::checkpoint::Arch;
use workload::synth::{self, shapes, GenSpec, Preset, StorageDtype};

const CLIENTS: usize = 16;

fn small_nllb(dir: &Path) {
    let spec = GenSpec {
        arch: Arch::Nllb,
        dims: shapes::preset_dims(Arch::Nllb, Preset::Small),
        dtype: StorageDtype::F32,
        shard_bytes: u64::MAX,
        seed: 1,
    };
    synth::generate(&spec, dir).unwrap();
}

/// What one client saw.
#[derive(Debug)]
enum Outcome {
    Status(u16),
    Reset,
    // Read through Debug, in the failure messages.
    #[allow(dead_code)]
    Other(String),
}

fn request(port: u16, method: &str, path: &str, body: &str) -> Outcome {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return Outcome::Other(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return if e.kind() == std::io::ErrorKind::ConnectionReset { Outcome::Reset } else { Outcome::Other(e.to_string()) };
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Outcome::Reset,
        Err(e) => Outcome::Other(e.to_string()),
        Ok(_) => {
            let text = String::from_utf8_lossy(&answer);
            match text.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                Some(code) if text.contains("\r\n\r\n") => Outcome::Status(code),
                _ => Outcome::Other(format!("not an HTTP answer: {text:?}")),
            }
        }
    }
}

fn wait_for_port(run: &TracerRun) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(rest) = run.stderr().split("listening on http://127.0.0.1:").nth(1) {
            if let Some(port) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return port;
            }
        }
        assert!(Instant::now() < deadline, "the server never said where it listens:\n{}", run.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_16_translations_in_flight_resets_no_client() {
    require_root("the tracer loads eBPF programs");
    let tmp = TempDir::new("graceful");
    let model = tmp.0.join("nllb");
    small_nllb(&model);
    let run = TracerRun::start(&[
        "run",
        "--grace",
        "500ms",
        "--",
        workload_bin().to_str().unwrap(),
        "serve",
        "--port",
        "0",
        "--load",
        "eager",
        "--max-new-tokens",
        "48",
        "--model",
        &format!("nllb={}", model.display()),
    ]);
    run.wait_attached(Duration::from_secs(60));
    let server = run.traced_child();
    let port = wait_for_port(&run);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(request(port, "GET", "/ready", ""), Outcome::Status(200)) {
        assert!(Instant::now() < deadline, "the model never became ready:\n{}", run.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = r#"{"text": "The weather is nice today and we will walk by the river.", "source": "eng_Latn", "target": "fra_Latn"}"#;
    let clients: Vec<_> =
        (0..CLIENTS).map(|_| std::thread::spawn(move || request(port, "POST", "/translate", body))).collect();
    // Let every request reach the server and queue on the model.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill(2) of the server this test started.
    unsafe { libc::kill(server as i32, libc::SIGTERM) };
    // The listener closes first: a connect is refused while the server still finishes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused_while_alive = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break tracer::process::process_exists(server),
            Err(e) => panic!("connect after the stop: {e}"),
            Ok(mut s) => {
                // Taken in before the close: it must get an answer (503 once the stop is
                // under way), not a reset.
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let mut answer = String::new();
                let r = s.read_to_string(&mut answer);
                assert!(r.is_ok() && answer.starts_with("HTTP/1.1 "), "{r:?} {answer:?}");
            }
        }
        assert!(Instant::now() < deadline, "connects were never refused after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    let outcomes: Vec<Outcome> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let trace = run.finish(Duration::from_secs(120));
    eprintln!("clients: {outcomes:?}");
    let resets = outcomes.iter().filter(|o| matches!(o, Outcome::Reset)).count();
    assert_eq!(resets, 0, "{outcomes:?}\n{}", trace.stderr);
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Status(200) | Outcome::Status(503))), "{outcomes:?}\n{}", trace.stderr);
    let finished = outcomes.iter().filter(|o| matches!(o, Outcome::Status(200))).count();
    assert!(finished >= CLIENTS / 2, "the requests in flight are finished, not dropped: {outcomes:?}");
    assert!(refused_while_alive, "the listener should close before the server exits");
    // The server's own account of it: no reset of a connection, an exit of 0. (The
    // refused connects above are resets too, `NO_SOCKET` answers to a SYN: the clean
    // refusal asked for.)
    let sent: Vec<_> = trace
        .events
        .iter()
        .filter(|e| {
            e.pid == server
                && matches!(&e.kind, EventKind::TcpReset { attributed_by: Some(_), reason, .. } if reason.as_deref() != Some("NO_SOCKET"))
        })
        .collect();
    let refused = trace
        .events
        .iter()
        .filter(|e| e.pid == server && matches!(&e.kind, EventKind::TcpReset { reason: Some(r), .. } if r == "NO_SOCKET"))
        .count();
    eprintln!("resets of connections in the server's trace: {}; refused connects: {refused}", sent.len());
    assert!(sent.is_empty(), "resets in the server's trace: {sent:#?}");
    let exit = trace
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Exit { group_dead: true, exit_code, .. } if e.pid == server => Some(*exit_code),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exit of the server in the trace\n{}", trace.stderr));
    assert_eq!(exit, Some(0), "{}", trace.stderr);
}

//! Just enough HTTP to ask the workload for its state while a scenario runs (the probe
//! does the real client work).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on 127.0.0.1:port; the JSON body of a 2xx/4xx/5xx answer, None when there
/// is no answer.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// The state of model `name` from `/models` ("LOADING", "READY", "FAILED"...).
pub fn model_state(port: u16, name: &str) -> Option<String> {
    let models = get_json(port, "/models")?;
    models.as_array()?.iter().find(|m| m["name"] == name)?["state"].as_str().map(String::from)
}

/// Whether something accepts connections on 127.0.0.1:port.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Whether a socket listens on `port` (from /proc/net/tcp and tcp6), without connecting:
/// a probing connect before the listen would itself be refused with a RST, which the
/// tracer would rightly report.
pub fn port_listening(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file).unwrap_or_default().lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or("");
            let state = fields.nth(1).unwrap_or("");
            local.ends_with(&hex) && state == "0A"
        })
    })
}

/// A port nobody listens on right now (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

//! Stopping without resetting a client. A connection closed with a request unread in its
//! socket is reset by the kernel, and a listener closed with connections still in its
//! accept queue resets each of them: the very `Connection reset by peer` this project
//! explains. So on SIGTERM or SIGINT the server:
//!
//! 1. marks itself shutting down (`/health` and `/ready` answer 503, new translations
//!    are refused with 503, queued model loads are dropped);
//! 2. for 200 ms takes in every connection in the accept queue and answers it 503
//!    "shutting down" itself, reading its request first ([`answer_shutting_down`]), while
//!    connections accepted just before the stop send their requests and get 503 from the
//!    handlers;
//! 3. closes the listener: a connect from now on is refused, cleanly;
//! 4. lets the requests in flight finish, up to `--shutdown-timeout`, then exits 0.
use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
    task::JoinSet,
};

/// How long a connection from the accept queue gets to send its request before it is
/// answered anyway.
const READ_REQUEST_FOR: Duration = Duration::from_secs(2);

/// A request larger than this is not read to its end before the 503.
const MAX_REQUEST: usize = 1 << 20;

/// How long after the stop the accept queue keeps being answered 503 before the listener
/// closes: long enough for a connection the server accepted just before the stop to send
/// its request and be answered (hyper closes an idle connection at the shutdown, which
/// would leave its client without an answer).
const ANSWER_FOR: Duration = Duration::from_millis(200);

/// The server's listener: as tokio's, until the stop; then it takes in the accept queue,
/// answers each connection 503 on a task of its own, says so on `drained`, and accepts
/// nothing more (the server then drops it, which closes the socket).
pub struct DrainingListener {
    inner: TcpListener,
    stop: watch::Receiver<bool>,
    drained: Option<oneshot::Sender<()>>,
    answering: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl DrainingListener {
    pub fn new(inner: TcpListener, stop: watch::Receiver<bool>, drained: oneshot::Sender<()>) -> Self {
        DrainingListener { inner, stop, drained: Some(drained), answering: Arc::new(tokio::sync::Mutex::new(JoinSet::new())) }
    }

    /// The connections being answered 503: wait for them before exiting.
    pub fn answering(&self) -> Arc<tokio::sync::Mutex<JoinSet<()>>> {
        self.answering.clone()
    }

    /// Every connection in the accept queue now, without waiting.
    async fn drain_queue(&mut self) {
        let mut n = 0usize;
        while let Some(stream) = accept_now(&self.inner) {
            n += 1;
            self.answering.lock().await.spawn(answer_shutting_down(stream));
        }
        if n > 0 {
            tracing::info!("answered {n} queued connection(s) 503 shutting down");
        }
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if *self.stop.borrow() {
                let until = tokio::time::Instant::now() + ANSWER_FOR;
                loop {
                    self.drain_queue().await;
                    if tokio::time::Instant::now() >= until {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // A last look, and the listener stops listening at once: a connection
                // that completed its handshake between this look and the server dropping
                // the listener (milliseconds later) would be reset with the queue. After
                // shutdown(2) a connect is refused; only the microseconds between the
                // look and the call are left.
                self.drain_queue().await;
                // SAFETY: shutdown(2) on the listening socket we own; it stays open until
                // the server drops it.
                if unsafe { libc::shutdown(self.inner.as_raw_fd(), libc::SHUT_RDWR) } != 0 {
                    tracing::debug!("shutdown of the listener: {}", io::Error::last_os_error());
                }
                if let Some(tx) = self.drained.take() {
                    let _ = tx.send(());
                }
                // The server stops calling once told the queue is drained.
                std::future::pending::<()>().await;
            }
            tokio::select! {
                accepted = self.inner.accept() => match accepted {
                    Ok(conn) => return conn,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as hyper's own loop does.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection from the accept queue, without blocking; None when the queue is empty.
fn accept_now(listener: &TcpListener) -> Option<TcpStream> {
    // SAFETY: accept4 on a listening socket we own; the new fd is ours.
    let fd = unsafe {
        libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            tracing::warn!("taking in a queued connection failed: {e}");
        }
        return None;
    }
    // SAFETY: fd is a fresh, owned, non-blocking socket.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    TcpStream::from_std(std_stream).ok()
}

/// Reads the request (head and body, as far as Content-Length says), answers 503 with a
/// JSON body and `Connection: close`, and closes after the client has read it: nothing is
/// left unread, so the kernel sends FIN, not RST.
pub async fn answer_shutting_down(mut stream: TcpStream) {
    let _ = tokio::time::timeout(READ_REQUEST_FOR, read_request(&mut stream)).await;
    let body = r#"{"status":"shutting down","error":"the server is shutting down: retry on another instance or after the restart"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Whatever the client still sends is read, until it closes its side.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(READ_REQUEST_FOR, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn read_request(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut have = buf.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn after_the_stop_queued_connections_get_a_whole_503_and_then_refusal() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        // Two clients whose connections wait in the accept queue with their requests sent.
        let clients: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello").unwrap();
                    let mut answer = String::new();
                    s.read_to_string(&mut answer).map(|_| answer)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (drained_tx, drained_rx) = oneshot::channel();
        let mut listener = DrainingListener::new(inner, stop_rx, drained_tx);
        let answering = listener.answering();
        stop_tx.send(true).unwrap();
        let accept = tokio::spawn(async move {
            let _never = listener.accept().await;
        });
        drained_rx.await.expect("the queue is reported drained");
        while answering.lock().await.join_next().await.is_some() {}
        for c in clients {
            let answer = tokio::task::spawn_blocking(move || c.join().unwrap()).await.unwrap().expect("no reset");
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.ends_with('}') && answer.contains("shutting down"), "{answer}");
        }
        // The server drops the listener once drained: connects are refused.
        accept.abort();
        let _ = accept.await;
        let e = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}

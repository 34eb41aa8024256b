//! One tracing session: attach to the target, stream events in time order to the sink
//! (and to the live view, when one is up), stop on Ctrl-C, duration, the target's exit
//! plus a grace period, or the user quitting the live view.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    capture::{decode::clock_ns, target::{self, StartedCommand}, Capture, CaptureError},
    event::{Event, EventKind},
    diagnose::{self, Verdict},
    export::{jsonl::JsonlWriter, timeline::Timeline},
    live::{self, LiveFeed},
    sample::Sampler,
};

/// How long events wait before release: enough for records from other CPUs and for the
/// socket states that name a reset's connection to arrive.
const REORDER_WINDOW: Duration = Duration::from_millis(100);
const TICK: Duration = Duration::from_millis(50);

pub struct SessionOptions {
    pub duration: Option<Duration>,
    pub grace: Duration,
    /// Take a `sample` event (procfs, memory cgroup, GPUs, system) this often; None: never.
    pub sample_interval: Option<Duration>,
    /// The capture traces forked processes too: sample them as well.
    pub follow_children: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    TargetExited,
    Duration,
    Interrupted,
    OutputClosed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::TargetExited => "target_exited",
            StopReason::Duration => "duration",
            StopReason::Interrupted => "interrupted",
            StopReason::OutputClosed => "output_closed",
        }
    }
}

pub struct Summary {
    pub reason: StopReason,
    pub events: u64,
    pub lost: u64,
    /// The events released, bounded (for diagnosis and the Perfetto export).
    pub timeline: Timeline,
    /// Diagnosis of the session, also written before `trace_end`.
    pub verdicts: Vec<Verdict>,
}

fn wall_now() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Runs until a stop condition; `child` is the process started by `tracer run`, reaped
/// here so that its exit is seen.
pub async fn run(
    capture: Capture,
    target_pid: u32,
    child: Option<StartedCommand>,
    start: Event,
    opts: &SessionOptions,
    out: &mut JsonlWriter,
) -> anyhow::Result<Summary> {
    run_live(capture, target_pid, child, start, opts, out, None).await
}

/// [`run`], also feeding the live view: every released event, the verdicts as they
/// change; the session stops (as on Ctrl-C) when the view closes, and when the user quit
/// it with a key, a command started by `tracer run` that still runs gets SIGINT, as
/// Ctrl-C would give it on a terminal without the view. The caller sends the end
/// ([`LiveFeed::finish`]).
pub async fn run_live(
    mut capture: Capture,
    target_pid: u32,
    mut child: Option<StartedCommand>,
    start: Event,
    opts: &SessionOptions,
    out: &mut JsonlWriter,
    mut live: Option<&mut LiveFeed>,
) -> anyhow::Result<Summary> {
    let ring_fd = capture.ring_fd().try_clone_to_owned().context("duplicating the ring buffer fd")?;
    // SAFETY: the fd is ours (a dup) and lives exactly as long as the AsyncFd.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the event loop: {e}"))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(TICK);
    let started = Instant::now();
    let mut pending: Vec<Event> = Vec::new();
    let mut exited_at: Option<Instant> = None;
    let mut output_closed = false;
    let mut timeline = Timeline::new();
    let mut sampler = opts.sample_interval.and_then(|every| match Sampler::new(target_pid, opts.follow_children, every) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no samples in this trace: {e}");
            None
        }
    });
    let write = |ev: &Event, out: &mut JsonlWriter| -> bool {
        match out.write(ev) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
            Err(e) => {
                tracing::error!("writing the trace: {e}");
                false
            }
        }
    };
    let mut quit = live.as_deref_mut().and_then(LiveFeed::take_quit);
    timeline.push(&start);
    write(&start, out);
    if let Some(l) = live.as_deref_mut() {
        l.event(&start);
    }

    let reason = loop {
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard.map_err(CaptureError::Poll)?;
                guard.clear_ready();
                if drain_saw_target_exit(&mut capture, &mut pending, target_pid, sampler.as_mut()) {
                    exited_at.get_or_insert_with(Instant::now);
                }
            }
            _ = tick.tick() => {
                let saw_exit = drain_saw_target_exit(&mut capture, &mut pending, target_pid, sampler.as_mut());
                capture.poll_lost(wall_now(), &mut pending);
                if let Some(sample) = sampler.as_mut().and_then(|s| s.poll(Instant::now())) {
                    pending.push(sample);
                }
                // The exit record, else the process table: a lost record must not keep us
                // running forever.
                if exited_at.is_none()
                    && (saw_exit
                        || child.as_mut().is_some_and(|c| c.try_wait().is_some())
                        || !target::process_exists(target_pid))
                {
                    exited_at = Some(Instant::now());
                }
                release(&mut capture, &mut pending, wall_now().saturating_sub(REORDER_WINDOW.as_nanos() as u64), |ev| {
                    timeline.push(ev);
                    if let Some(l) = live.as_deref_mut() {
                        l.event(ev);
                    }
                    if !write(ev, out) { output_closed = true; }
                });
                if let Some(l) = live.as_deref_mut() {
                    l.tick(&timeline);
                }
                // A live reader (a terminal, a pipe) sees events within a tick.
                if out.flush().is_err() {
                    output_closed = true;
                }
                if output_closed {
                    break StopReason::OutputClosed;
                }
                if exited_at.is_some_and(|t| t.elapsed() >= opts.grace) {
                    break StopReason::TargetExited;
                }
                if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                    break StopReason::Duration;
                }
            }
            _ = tokio::signal::ctrl_c() => break StopReason::Interrupted,
            _ = sigterm.recv() => break StopReason::Interrupted,
            by_key = live::quit_requested(&mut quit) => {
                if let Some(c) = child.as_mut().filter(|_| by_key) {
                    if c.try_wait().is_none() {
                        // Ctrl-C reaches the whole foreground group: the command and what it
                        // started (children first, then our own child, not reaped: its pid
                        // is still ours).
                        for p in target::descendants(c.pid).into_iter().chain([c.pid]) {
                            // SAFETY: plain syscall.
                            unsafe { libc::kill(p as i32, libc::SIGINT) };
                        }
                        // A moment for it to go, so that its exit is in the trace.
                        for _ in 0..50 {
                            if c.try_wait().is_some() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                break StopReason::Interrupted;
            }
        }
    };

    // Flush everything captured: what is still in the ring buffer and in the window.
    capture.drain(&mut pending);
    capture.poll_lost(wall_now(), &mut pending);
    release(&mut capture, &mut pending, u64::MAX, |ev| {
        timeline.push(ev);
        if let Some(l) = live.as_deref_mut() {
            l.event(ev);
        }
        write(ev, out);
    });
    let events = out.written.saturating_sub(1);
    let lost = capture.lost_total();
    let end_ns = wall_now();
    let end = Event {
        ts_ns: end_ns,
        pid: target_pid,
        tid: target_pid,
        comm: String::new(),
        kind: EventKind::TraceEnd { reason: reason.as_str().into(), events, lost },
    };
    // Verdicts over what was seen, written just before trace_end (which stays last).
    timeline.push(&end);
    let verdicts = diagnose::diagnose(timeline.events());
    for v in &verdicts {
        if let Err(e) = out.write_verdict(end_ns, v) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::error!("writing a verdict to the trace: {e}");
            }
            break;
        }
    }
    write(&end, out);
    if let Some(l) = live {
        l.event(&end);
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("flushing the trace");
        }
    }
    if let Some(mut c) = child {
        if c.try_wait().is_none() {
            tracing::warn!("leaving pid {} running", c.pid);
        }
    }
    Ok(Summary { reason, events, lost, timeline, verdicts })
}

/// Drains the ring buffer into `pending`; true when the drained records include the end
/// of the target process.
fn drain_saw_target_exit(
    capture: &mut Capture,
    pending: &mut Vec<Event>,
    target_pid: u32,
    sampler: Option<&mut Sampler>,
) -> bool {
    let before = pending.len();
    capture.drain(pending);
    // The sampler follows traced children through their fork and exit records.
    if let Some(s) = sampler {
        s.observe(&pending[before..]);
    }
    pending[before..]
        .iter()
        .any(|e| e.pid == target_pid && matches!(e.kind, EventKind::Exit { group_dead: true, .. }))
}

/// Sorts the window by time and hands out everything older than `until`, attributing
/// resets on the way out.
fn release(capture: &mut Capture, pending: &mut Vec<Event>, until: u64, mut emit: impl FnMut(&Event)) {
    if pending.is_empty() {
        return;
    }
    pending.sort_by_key(|e| e.ts_ns);
    let split = pending.partition_point(|e| e.ts_ns <= until);
    for mut ev in pending.drain(..split) {
        capture.decoder.attribute(&mut ev);
        emit(&ev);
    }
}

//! One tracing session: capture and samplers feed finished events, in time order, to a
//! list of sinks; the session stops on Ctrl-C, SIGTERM, the duration, the target's exit
//! plus a grace period, a sink closing, or an outside request (the live view closing).
//! At the end it diagnoses what it kept and hands every sink the verdicts and the
//! `trace_end` event.
use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    capture::{Capture, CaptureError},
    clock::wall_now_ns,
    diagnose::{self, Verdict},
    event::{Event, EventKind},
    process::{self, spawn::StartedCommand},
    sample::{stall::Stalls, Sampler},
    sink::{Sink, SinkError},
    summary::MemoryFolder,
    forecast::Forecaster,
    timeline::Timeline,
};

/// Events reach the sinks on the tick: its period is most of the delay from a kernel
/// event to its JSON line.
const TICK: Duration = Duration::from_millis(20);
/// Events taken in from the ring buffer that are released before the tick comes.
const RELEASE_AT: usize = 2 * crate::capture::READ_CHUNK;
/// How often a `--cgroup` scope is listed for members the kernel's check did not see
/// move in (a path longer than it compares, a cgroup mount this process cannot see).
const SCOPE_EVERY: Duration = Duration::from_secs(2);

pub struct SessionOptions {
    pub duration: Option<Duration>,
    pub grace: Duration,
    /// Take a `sample` event (procfs, memory cgroup, GPUs, system) this often; None: never.
    pub sample_interval: Option<Duration>,
    /// The capture traces forked processes too: sample them as well.
    pub follow_children: bool,
    /// `--follow-restarts`: when the target dies, wait this long for its successor.
    pub restart_wait: Option<Duration>,
    /// `run --kill-on-exit`: a command still running when the trace stops is stopped.
    pub kill_on_exit: bool,
    /// `--mappings summary`: anonymous memory calls smaller than this are counted per
    /// process per second instead of written one by one.
    pub summarize_below: Option<u64>,
    /// `--warn-before`: forecasts of a memory limit reached within this time; None: none.
    pub warn_before: Option<Duration>,
    /// `--stall-trigger`: PSI triggers for this much memory stall in a second; None: none.
    pub stall_trigger: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    TargetExited,
    Duration,
    Interrupted,
    /// The reader of the trace went away (a closed pipe): a quiet stop.
    OutputClosed,
    /// Writing the trace failed (a full disk): the capture stopped.
    WriteFailed,
    /// `--follow-restarts`: no successor within the wait.
    NoRestart,
    /// `--cgroup`: the cgroup was removed.
    CgroupRemoved,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::TargetExited => "target_exited",
            StopReason::Duration => "duration",
            StopReason::Interrupted => "interrupted",
            StopReason::OutputClosed => "output_closed",
            StopReason::WriteFailed => "write_failed",
            StopReason::NoRestart => "no_restart",
            StopReason::CgroupRemoved => "cgroup_removed",
        }
    }
}

pub struct Summary {
    pub reason: StopReason,
    pub events: u64,
    pub lost: u64,
    /// The events released, bounded (for diagnosis and the Perfetto export).
    pub timeline: Timeline,
    /// Diagnosis of the session, also handed to every sink before `trace_end`.
    pub verdicts: Vec<Verdict>,
    /// Why writing failed, when a sink failed: the command exits non-zero with it.
    pub failure: Option<String>,
}

/// A request from outside to stop: resolves to `true` when the user asked with a key (q,
/// Ctrl-C in the live view), which also stops a command started by `tracer run`, as
/// Ctrl-C would on a plain terminal; `false` only stops the trace.
pub type StopRequest = Pin<Box<dyn Future<Output = bool>>>;

/// What is traced: the target process, and the command `tracer run` started (reaped
/// here so that its exit is seen).
pub struct Target {
    pub pid: u32,
    pub child: Option<StartedCommand>,
    /// Its arguments: what a successor must exec to be it (`--follow-restarts`).
    pub argv: Vec<String>,
    /// `--cgroup`/`--unit`: the cgroup whose processes are traced; the session does not
    /// end with `pid`, it takes in processes that join and ends when the cgroup goes.
    pub scope: Option<std::path::PathBuf>,
}

/// The session's state while it runs.
struct Running<'a, 'b> {
    sinks: &'a mut [&'b mut dyn Sink],
    timeline: Timeline,
    /// Samples wait here until capture has released every kernel event before them.
    samples: VecDeque<Event>,
    /// `--mappings summary`: counts small anonymous memory calls.
    folder: Option<MemoryFolder>,
    /// `--warn-before`: projects memory toward its limits.
    forecaster: Option<Forecaster>,
    /// The time of the last event handed to the sinks.
    last_ns: u64,
    events: u64,
    /// Why a sink stopped the session, once one did.
    closed: Option<SinkError>,
}

impl Running<'_, '_> {
    fn emit(&mut self, ev: &Event) {
        if let Some(folder) = self.folder.as_mut() {
            let (due, folded) = folder.offer(ev, true);
            for summary in due {
                self.write(&summary);
            }
            if folded {
                return;
            }
        }
        self.write(ev);
    }

    fn write(&mut self, ev: &Event) {
        self.timeline.push(ev);
        self.events += 1;
        self.last_ns = self.last_ns.max(ev.ts_ns);
        for sink in self.sinks.iter_mut() {
            if let Err(e) = sink.event(ev) {
                self.closed.get_or_insert(e);
            }
        }
        if let Some(forecast) = self.forecaster.as_mut().and_then(|f| f.observe(ev)) {
            self.write(&forecast);
        }
    }

    /// Capture's released events merged with the samples taken before `until_ns`, then
    /// the summaries of the intervals that ended by then.
    fn emit_merged(&mut self, released: Vec<Event>, until_ns: u64) {
        for ev in released {
            while self.samples.front().is_some_and(|s| s.ts_ns <= ev.ts_ns) {
                let s = self.samples.pop_front().expect("front checked");
                self.emit(&s);
            }
            self.emit(&ev);
        }
        while self.samples.front().is_some_and(|s| s.ts_ns <= until_ns) {
            let s = self.samples.pop_front().expect("front checked");
            self.emit(&s);
        }
        let due = match self.folder.as_mut() {
            Some(f) if until_ns == u64::MAX => f.drain(self.last_ns),
            Some(f) => f.due(until_ns),
            None => Vec::new(),
        };
        for summary in due {
            self.write(&summary);
        }
    }

    fn tick(&mut self) {
        for sink in self.sinks.iter_mut() {
            if let Err(e) = sink.tick(&self.timeline) {
                self.closed.get_or_insert(e);
            }
        }
    }
}

/// Runs until a stop condition. `start` is the trace's first event; `stop` an optional
/// outside request to stop.
pub async fn run(
    mut capture: Capture,
    mut target: Target,
    start: Event,
    opts: &SessionOptions,
    sinks: &mut [&mut dyn Sink],
    stop: Option<StopRequest>,
) -> anyhow::Result<Summary> {
    let ring_fd = capture.ring_fd().try_clone_to_owned().context("duplicating the ring buffer fd")?;
    // SAFETY: the fd is ours (a dup) and lives exactly as long as the AsyncFd.
    let ring = unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with the event loop: {e}"))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(TICK);
    let started = Instant::now();
    let mut exited_at: Option<Instant> = None;
    let mut target_pid = target.pid;
    let mut sampler = opts.sample_interval.and_then(|every| match Sampler::new(target_pid, opts.follow_children, every) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no samples in this trace: {e}");
            None
        }
    });
    // Armed again once a sample has located the memory cgroup (its own trigger, on v2).
    let mut stalls = match (opts.stall_trigger, &sampler) {
        (Some(stall), Some(s)) => Stalls::arm(s.memory_cgroup(), stall),
        _ => Stalls::default(),
    };
    let mut stop: StopRequest = stop.unwrap_or_else(|| Box::pin(std::future::pending()));
    // `--cgroup`: the processes known to be in it, and when it was last listed.
    let mut scope_known: std::collections::HashSet<u32> =
        target.scope.as_deref().map(|d| process::scope::members(d).into_iter().collect()).unwrap_or_default();
    let mut scope_listed = Instant::now();
    let mut run = Running {
        sinks,
        timeline: Timeline::new(),
        samples: VecDeque::new(),
        folder: opts.summarize_below.map(MemoryFolder::new),
        forecaster: opts.warn_before.map(|w| Forecaster::new(target_pid, w)),
        last_ns: 0,
        events: 0,
        closed: None,
    };
    run.emit(&start);
    run.events = 0;

    let reason = loop {
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard.map_err(CaptureError::Poll)?;
                // A chunk at a time: with more waiting, readiness stays set and the loop
                // comes back here (or to the tick) at once.
                if !capture.receive() {
                    guard.clear_ready();
                }
                // Ordering and release wait for the tick, unless a burst has piled up
                // enough to release now: the events taken in stay bounded.
                if capture.backlog() >= RELEASE_AT
                    && take(&mut capture, &mut run, sampler.as_mut(), target_pid).is_some()
                {
                    exited_at.get_or_insert_with(Instant::now);
                }
            }
            _ = tick.tick() => {
                for task in capture.take_moved() {
                    if let Some(s) = sampler.as_mut() {
                        s.moved(task);
                    }
                }
                if let Some(sample) = sampler.as_mut().and_then(|s| s.poll(Instant::now())) {
                    run.samples.push_back(sample);
                }
                if let (Some(stall), Some(s)) = (opts.stall_trigger, sampler.as_ref()) {
                    let located = s.memory_cgroup();
                    if located.is_some() && located.map(|(dir, _)| dir) != stalls.armed_for.as_deref() {
                        stalls = Stalls::arm(located, stall);
                    }
                }
                let saw_exit = take(&mut capture, &mut run, sampler.as_mut(), target_pid);
                // The exit record, else the process table: a lost record must not keep us
                // running forever.
                if exited_at.is_none()
                    && (saw_exit.is_some()
                        || target.child.as_mut().is_some_and(|c| c.try_wait().is_some())
                        || !process::process_exists(target_pid))
                {
                    exited_at = Some(Instant::now());
                }
                // Successors the kernel adopted: traced from their exec, which is in the
                // trace already; the session moves its target on.
                for successor in capture.take_successors() {
                    if opts.follow_children {
                        for child in process::descendants(successor) {
                            capture.add_process(child)?;
                        }
                    }
                    tracing::info!("pid {} restarted as pid {}", target_pid, successor);
                    target_pid = successor;
                    if let Some(s) = sampler.as_mut() {
                        s.retarget(target_pid);
                    }
                    exited_at = None;
                }
                if let (Some(wait), Some(at)) = (opts.restart_wait, exited_at) {
                    if at.elapsed() >= wait {
                        break StopReason::NoRestart;
                    }
                }
                run.tick();
                match &run.closed {
                    Some(SinkError::Closed(_)) => break StopReason::OutputClosed,
                    Some(SinkError::Failed(_)) => break StopReason::WriteFailed,
                    None => {}
                }
                if let Some(dir) = target.scope.as_deref() {
                    // Tasks the kernel took in as they moved into the cgroup, then (rarely:
                    // the kernel's check sees every move) the members a listing finds.
                    for task in capture.take_joined() {
                        let pid = match capture.settle_joined(task) {
                            Ok(Some(pid)) => pid,
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::debug!("task {task} joined {}: {e}", dir.display());
                                task
                            }
                        };
                        if scope_known.insert(pid) {
                            tracing::debug!("pid {pid} moved into {}", dir.display());
                            if let Some(s) = sampler.as_mut() {
                                s.add(pid);
                            }
                        }
                    }
                    if !dir.is_dir() {
                        break StopReason::CgroupRemoved;
                    }
                    if scope_listed.elapsed() >= SCOPE_EVERY {
                        scope_listed = Instant::now();
                        for pid in process::scope::members(dir) {
                            if scope_known.insert(pid) && capture.add_process(pid).is_ok() {
                                tracing::debug!("pid {pid} found in {}", dir.display());
                                if let Some(s) = sampler.as_mut() {
                                    s.add(pid);
                                }
                            }
                        }
                    }
                } else if opts.restart_wait.is_none() && exited_at.is_some_and(|t| t.elapsed() >= opts.grace) {
                    break StopReason::TargetExited;
                }
                if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                    break StopReason::Duration;
                }
            }
            kind = stalls.fired() => {
                // In time order with the samples (both are the tracer's own), and a sample
                // right after it: the forecast gets the fresh usage.
                let comm = sampler.as_ref().map(|s| s.target_comm().to_string()).unwrap_or_default();
                run.samples.push_back(Event { ts_ns: wall_now_ns(), pid: target_pid, tid: target_pid, comm, kind });
                if let Some(s) = sampler.as_mut() {
                    s.sample_soon();
                }
            }
            _ = tokio::signal::ctrl_c() => break StopReason::Interrupted,
            _ = sigterm.recv() => break StopReason::Interrupted,
            by_key = &mut stop => {
                if let Some(c) = target.child.as_mut().filter(|_| by_key) {
                    interrupt_command(c).await;
                }
                break StopReason::Interrupted;
            }
        }
    };

    if opts.kill_on_exit {
        if let Some(c) = target.child.as_mut() {
            terminate_command(c).await;
        }
    }
    // Flush everything captured: what is still in the ring buffer, a chunk at a time,
    // then the window.
    while capture.receive() {
        take(&mut capture, &mut run, sampler.as_mut(), target_pid);
    }
    let rest = capture.finish(wall_now_ns());
    run.emit_merged(rest, u64::MAX);
    let events = run.events;
    let lost = capture.lost_total();
    let end = Event {
        ts_ns: wall_now_ns(),
        pid: target_pid,
        tid: target_pid,
        comm: String::new(),
        kind: EventKind::TraceEnd { reason: reason.as_str().into(), events, lost, other_resets: capture.other_resets(), cut: None },
    };
    let mut timeline = run.timeline;
    timeline.push(&end);
    let verdicts = diagnose::diagnose(timeline.events());
    // The first failure is the one to report; a sink that failed may fail again here.
    let mut failure = match run.closed.take() {
        Some(SinkError::Failed(why)) => Some(why),
        _ => None,
    };
    for sink in run.sinks.iter_mut() {
        if let Err(SinkError::Failed(why)) = sink.finish(&verdicts, &end, reason.as_str()).await {
            failure.get_or_insert(why);
        }
    }
    if let Some(c) = target.child.as_mut() {
        if c.try_wait().is_none() {
            tracing::warn!("leaving pid {} running", c.pid);
        }
    }
    Ok(Summary { reason, events, lost, timeline, verdicts, failure })
}

/// Releases what capture has finished to the sinks; the time of the target's end when it
/// is among them.
fn take(capture: &mut Capture, run: &mut Running, sampler: Option<&mut Sampler>, target_pid: u32) -> Option<u64> {
    let released = capture.poll(wall_now_ns());
    // The sampler follows traced children through their fork and exit records.
    if let Some(s) = sampler {
        s.observe(&released.events);
    }
    let saw_exit = released
        .events
        .iter()
        .find(|e| e.pid == target_pid && matches!(e.kind, EventKind::Exit { group_dead: true, .. }))
        .map(|e| e.ts_ns);
    run.emit_merged(released.events, released.until_ns);
    saw_exit
}

/// Ctrl-C reaches the whole foreground group: the command and what it started (children
/// first, then our own child, not reaped: its pid is still ours). Waits a moment for it
/// to go, so that its exit is in the trace.
async fn interrupt_command(c: &mut StartedCommand) {
    if c.try_wait().is_some() {
        return;
    }
    for p in process::descendants(c.pid).into_iter().chain([c.pid]) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(p as i32, libc::SIGINT) };
    }
    for _ in 0..50 {
        if c.try_wait().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `--kill-on-exit`: SIGTERM to the command and what it started, SIGKILL to whatever is
/// left 2 s later; reaped here, so that its exit is in the trace.
async fn terminate_command(c: &mut StartedCommand) {
    if c.try_wait().is_some() {
        return;
    }
    let pid = c.pid;
    let signal_all = |sig: i32| {
        for p in process::descendants(pid).into_iter().chain([pid]) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(p as i32, sig) };
        }
    };
    signal_all(libc::SIGTERM);
    for _ in 0..200 {
        if c.try_wait().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal_all(libc::SIGKILL);
    for _ in 0..100 {
        if c.try_wait().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Loads models one at a time on a thread of its own, so the async runtime keeps
//! answering `/health` whatever a load does to the CPU.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::bytes::human_bytes;

use crate::budget::MemoryBudget;
use crate::checkpoint::Checkpoint;
use crate::device::Placement;
use crate::registry::{ModelSlot, Registry};
use crate::translate::Translator;

/// `--load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// The fix: a memory-budget check before each load; a model that does not fit is
    /// FAILED with the numbers and the service stays up.
    Background,
    /// The behaviour from the bug report, kept for reproductions: no budget check, so an
    /// oversized model gets the process OOM-killed.
    Eager,
}

impl LoadMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Eager => "eager",
        }
    }
}

/// How the loader works; fixed for the life of the service.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub mode: LoadMode,
    pub placement: Placement,
    /// `--memory-budget`: at most this many bytes per load, on top of what the kernel allows.
    pub memory_budget: Option<u64>,
    /// `--gpu-memory-limit`: the GPU budget check pretends at most this many bytes of
    /// device memory are free (min of the real free memory and this).
    pub gpu_memory_limit: Option<u64>,
    pub max_new_tokens: usize,
    /// Debug only (`--debug-crash-during-load NAME`): fault on purpose while loading NAME,
    /// so the tracer's crash verdict can be reproduced.
    pub crash_during_load: Option<String>,
}

/// One queued load. `claimed`: the slot was moved to LOADING when it was queued (a
/// reload through the API, whose 202 must not be followed by a stale FAILED).
struct LoadRequest {
    slot: Arc<ModelSlot>,
    claimed: bool,
}

/// Why [`Loader::reload`] queued nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReloadError {
    #[error("model {name} is {state} already")]
    Busy { name: String, state: &'static str },
    #[error("the loader thread has stopped; restart the service")]
    Stopped,
}

/// Hands models to the loader thread.
#[derive(Clone)]
pub struct Loader {
    queue: mpsc::Sender<LoadRequest>,
    /// Set when the server shuts down: queued loads are dropped.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl Loader {
    /// Starts the loader thread and queues every model of `registry`, in order.
    pub fn start(config: LoaderConfig, registry: &Registry) -> std::io::Result<Self> {
        let (queue, requests) = mpsc::channel::<LoadRequest>();
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = cancelled.clone();
        std::thread::Builder::new().name("model-loader".into()).spawn(move || {
            for LoadRequest { slot, claimed } in requests {
                if stop.load(Ordering::Relaxed) {
                    tracing::info!(model = %slot.spec.name, "not loading: the server is shutting down");
                    if claimed {
                        slot.fail("not loaded: the server shut down before its turn".into());
                    }
                    continue;
                }
                if claimed || slot.begin_load() {
                    load(&config, &slot);
                }
            }
        })?;
        let loader = Self { queue, cancelled };
        for slot in registry.slots() {
            // Queued UNLOADED: each shows LOADING only when its turn comes.
            let _ = loader.send(LoadRequest { slot: slot.clone(), claimed: false });
        }
        Ok(loader)
    }

    /// Queues a reload of an UNLOADED or FAILED model and moves it to LOADING before
    /// returning, so whoever asked sees LOADING, never the state it asked to leave.
    pub fn reload(&self, slot: &Arc<ModelSlot>) -> Result<(), ReloadError> {
        if !slot.begin_load() {
            return Err(ReloadError::Busy { name: slot.spec.name.clone(), state: slot.status().state.as_str() });
        }
        if self.send(LoadRequest { slot: slot.clone(), claimed: true }) {
            Ok(())
        } else {
            slot.fail("not loaded: the loader thread has stopped".into());
            Err(ReloadError::Stopped)
        }
    }

    fn send(&self, request: LoadRequest) -> bool {
        !self.cancelled.load(Ordering::Relaxed) && self.queue.send(request).is_ok()
    }

    /// Drops the loads still queued; one under way runs on until the process exits.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

/// Loads a slot already moved to LOADING.
fn load(config: &LoaderConfig, slot: &ModelSlot) {
    let name = &slot.spec.name;
    let started = Instant::now();
    let checkpoint = match Checkpoint::open(&slot.spec.dir) {
        Ok(c) => c,
        Err(e) => return fail(slot, &e),
    };
    let placement = &config.placement;
    let bytes = checkpoint.bytes_at(placement.dtype);
    slot.update(|s| {
        s.arch = Some(checkpoint.arch);
        s.device = Some(placement.description.clone());
        s.dtype = Some(placement.dtype.as_str().to_string());
        s.bytes = Some(bytes);
    });
    let on_gpu = placement.device.is_cuda();
    if config.crash_during_load.as_deref() == Some(name.as_str()) {
        crash_on_purpose();
    }
    if config.mode == LoadMode::Background {
        match budget_for(config) {
            Ok(budget) => {
                if on_gpu && budget.gpu_free.is_none() {
                    tracing::warn!(model = %name, "cannot read the free memory of the GPU; checking host memory only");
                }
                if let Err(over) = budget.check(bytes) {
                    let gpu = budget.gpu_free.is_some().then(|| gpu_name(&placement.device));
                    let reason = refusal(gpu.as_deref(), &over);
                    tracing::warn!(model = %name, "not loading: {reason}");
                    slot.fail(reason);
                    return;
                }
            }
            Err(e) => tracing::warn!(model = %name, "cannot read the memory budget ({e}); loading without a check"),
        }
    }
    tracing::info!(
        model = %name,
        arch = checkpoint.arch.name(),
        bytes,
        "loading {} of weights on {}",
        human_bytes(bytes),
        placement.description
    );
    let gpu_free_before = if on_gpu { gpu_free_bytes(&placement.device) } else { None };
    let bar = progress_bar(name, bytes);
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let ticker = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(slot.progress.load(Ordering::Relaxed));
                // Woken at once when the load ends, so the scope does not add up to a tick
                // to every load's time.
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
        let result = Translator::load(name, &checkpoint, placement, slot.progress.clone());
        done.store(true, Ordering::Relaxed);
        ticker.thread().unpark();
        result
    });
    bar.finish_and_clear();
    match result {
        Ok(translator) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(model = %name, seconds, "READY ({:.1} s, {:.2} GB/s)", seconds, bytes as f64 / seconds / 1e9);
            if let (Some(before), Some(after)) = (gpu_free_before, gpu_free_bytes(&placement.device)) {
                let gpu_bytes = before.saturating_sub(after);
                tracing::info!(model = %name, gpu_bytes, "GPU memory taken by the load: {}", human_bytes(gpu_bytes));
            }
            slot.ready(translator.with_max_new_tokens(config.max_new_tokens), seconds);
        }
        Err(e) => fail(slot, &e),
    }
}

/// FAILED with `e` as the reason, in one line (see [`crate::reason`]), logged the same.
fn fail(slot: &ModelSlot, e: &dyn std::fmt::Display) {
    let reason = crate::reason::one_line(&e.to_string());
    tracing::error!(model = %slot.spec.name, "load failed: {reason}");
    slot.fail(reason);
}

/// The FAILED reason of a refused load; names the GPU when the budget was the GPU's.
fn refusal(gpu: Option<&str>, over: &crate::budget::OverBudget) -> String {
    match gpu {
        Some(gpu) => format!("over memory budget (GPU {gpu}): {over}"),
        None => format!("over memory budget: {over}"),
    }
}

fn budget_for(config: &LoaderConfig) -> std::io::Result<MemoryBudget> {
    let mut budget = MemoryBudget::of_current_process()?;
    budget.operator_limit = config.memory_budget;
    budget.gpu_free = gpu_free_bytes(&config.placement.device);
    budget.gpu_limit = config.gpu_memory_limit;
    Ok(budget)
}

/// "cuda:N" for a GPU device.
fn gpu_name(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

/// Free memory of the GPU `device` is on, from the CUDA driver (cuMemGetInfo); None on CPU.
#[cfg(feature = "cuda")]
fn gpu_free_bytes(device: &candle_core::Device) -> Option<u64> {
    let cuda = device.as_cuda_device().ok()?;
    let (free, _total) = cuda.cuda_stream().context().mem_get_info().ok()?;
    Some(free as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_free_bytes(_device: &candle_core::Device) -> Option<u64> {
    None
}

fn progress_bar(name: &str, bytes: u64) -> indicatif::ProgressBar {
    // indicatif draws only when stderr is a terminal, so logs and pipes stay clean.
    let bar = indicatif::ProgressBar::new(bytes);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}")
    {
        bar.set_style(style);
    }
    bar.set_message(format!("loading {name}"));
    bar
}

/// A real memory-access fault (SIGSEGV, SEGV_ACCERR from the kernel), not a raised signal,
/// a second into the load, as a load that faults part way: the service was seen up, as in
/// a real crash, however fast the models before it loaded.
fn crash_on_purpose() -> ! {
    std::thread::sleep(Duration::from_secs(1));
    tracing::error!("--debug-crash-during-load: faulting on purpose");
    // SAFETY: maps one inaccessible page and writes to it, which the kernel answers with
    // SIGSEGV; nothing after the write runs.
    unsafe {
        let page = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if page != libc::MAP_FAILED {
            std::ptr::write_volatile(page.cast::<u8>(), 1);
        }
        libc::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    #[test]
    fn a_refused_gpu_load_names_the_gpu_and_its_numbers() {
        let budget = MemoryBudget {
            cgroup: None,
            mem_available: 64 << 30,
            gpu_free: Some(139 << 30),
            gpu_limit: Some(8 << 30),
            operator_limit: None,
        };
        let over = budget.check(16 << 30).unwrap_err();
        let reason = refusal(Some("cuda:0"), &over);
        assert_eq!(
            reason,
            "over memory budget (GPU cuda:0): needs 16.80 GiB (16.00 GiB of weights + 5% working memory) but only 8.00 GiB \
             is available (--gpu-memory-limit 8.00 GiB (GPU free memory 139.00 GiB))"
        );
        assert!(refusal(None, &over).starts_with("over memory budget: needs"));
        assert_eq!(gpu_name(&candle_core::Device::Cpu), "Cpu");
    }
}

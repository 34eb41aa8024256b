//! Command line of the `workload` binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use host::bytes::parse_bytes;

use crate::checkpoint::Arch;
use crate::device::DeviceChoice;
use crate::loader::LoadMode;
use crate::registry::ModelSpec;
use crate::synth::{Preset, StorageDtype};

#[derive(Debug, Parser)]
#[command(
    name = "workload",
    version,
    about = "A translation service (NLLB and Aya on candle) that reproduces connection resets while loading models, and shows the fix",
    long_about = "A translation service (NLLB and Aya on candle) that reproduces the bug report's connection \
resets while loading models, and shows the fix.\n\n\
  workload gen-model --arch nllb --preset small --out /tmp/nllb\n\
  workload gen-model --arch aya --preset small --out /tmp/aya\n\
  workload serve --model nllb=/tmp/nllb --model aya=/tmp/aya --port 8000\n\
  workload probe --url http://127.0.0.1:8000 --duration 30s"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve translations over HTTP: /health, /ready, /models, /translate.
    Serve(ServeArgs),
    /// Poll a running service and record every outcome as JSON lines.
    Probe(ProbeArgs),
    /// Write a synthetic checkpoint (config.json, tokenizer.json, safetensors) with the
    /// real tensor names and random weights.
    GenModel(GenModelArgs),
    /// Print how this binary was built (version, candle backend) as JSON, for `tracer doctor`.
    BuildInfo,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}; use e.g. 100ms, 2s, 1m"))
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model to serve, as NAME=DIR (a Hugging Face model folder: config.json,
    /// tokenizer.json and model.safetensors, shards with model.safetensors.index.json, or
    /// pytorch_model.bin). Repeat for several; they load in this order.
    #[arg(long = "model", value_name = "NAME=DIR", required = true)]
    pub models: Vec<ModelSpec>,
    /// background: load one model at a time off the request path, after a memory-budget
    /// check (the fix). eager: load without any check (the crash from the bug report).
    #[arg(long, value_enum, default_value = "background")]
    pub load: LoadMode,
    /// Address to listen on. 127.0.0.1 keeps the service private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// auto: the GPU when this build has CUDA and a GPU answers, else the CPU.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Weights dtype in memory: f32, bf16 or f16 [default: bf16 on GPU, f32 on CPU].
    #[arg(long, value_parser = crate::device::parse_dtype)]
    pub dtype: Option<candle_core::DType>,
    /// Refuse a load that needs more than this (e.g. 2GiB), on top of the cgroup limit
    /// and MemAvailable. Only with --load background.
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub memory_budget: Option<u64>,
    /// GPU loads: pretend at most this much device memory is free (e.g. 8GiB), so the
    /// budget check uses min(free GPU memory, this). Rehearses an over-budget load on a
    /// big GPU. Only with --load background; ignored on the CPU.
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub gpu_memory_limit: Option<u64>,
    /// Longest text /translate accepts, in characters.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_TEXT_CHARS)]
    pub max_text_chars: usize,
    /// Most tokens generated per translation.
    #[arg(long, default_value_t = crate::translate::DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Debug: fault on purpose (SIGSEGV) a second after NAME starts loading, to reproduce a crash.
    #[arg(long, value_name = "NAME", hide = true)]
    pub debug_crash_during_load: Option<String>,
    /// On SIGTERM or SIGINT: stop accepting (connections already queued are answered 503
    /// "shutting down", later connects are refused), let the requests in flight finish
    /// for at most this long, drop queued model loads, then exit 0
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Time between health checks.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Time between translation requests; 0s sends none.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub translate_interval: Duration,
    /// Stop after this long [default: until Ctrl-C].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Give up on one request after this long (recorded as "timeout").
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Text to translate.
    #[arg(long, default_value = "Hello, how are you today?")]
    pub text: String,
    /// Language of --text, as an NLLB code (eng_Latn, deu_Latn...).
    #[arg(long, default_value = "eng_Latn")]
    pub source: String,
    /// Language to translate into, as an NLLB code (fra_Latn, spa_Latn...).
    #[arg(long, default_value = "fra_Latn")]
    pub target: String,
    /// Model to ask for [default: any ready model].
    #[arg(long)]
    pub model: Option<String>,
    /// Write the JSON lines here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct GenModelArgs {
    /// Model architecture to generate: nllb (NLLB-200, m2m_100) or aya (Aya 23, cohere).
    #[arg(long, value_parser = |s: &str| s.parse::<Arch>(), value_name = "nllb|aya")]
    pub arch: Arch,
    /// tiny (tests), small (fast CPU translations), full (the real shapes: NLLB-600M, aya-23-8B).
    #[arg(long, value_enum, conflicts_with = "bytes", required_unless_present = "bytes")]
    pub preset: Option<Preset>,
    /// Instead of a preset: scale the model so its weights take about this much (e.g. 1.5GiB).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub bytes: Option<u64>,
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage dtype of the weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: StorageDtype,
    /// Split the weights into shards of at most this size, with an index, like large
    /// Hugging Face checkpoints.
    #[arg(long, value_parser = parse_bytes, default_value = "5GB", value_name = "BYTES")]
    pub shard_size: u64,
    /// Seed of the random weights: the same seed gives the same files, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// File format of the weights: safetensors, or pytorch (one pytorch_model.bin as
    /// torch.save writes it; --shard-size does not apply).
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: WeightFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightFormat {
    Safetensors,
    Pytorch,
}

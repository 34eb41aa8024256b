//! The reproduction scenarios of the bug report, shared by `cargo xtask run-workload`,
//! the end-to-end tests and the benchmarks. A scenario puts the workload in a memory
//! cgroup, polls it with the probe, traces it with `tracer run`, and leaves the trace,
//! the report and the Perfetto timeline in one folder. Everything it starts (cgroup,
//! processes) is removed on drop, also on failure or Ctrl-C.

mod crash_loop;
pub mod http;
pub mod memcg;
pub mod otlp_receiver;
pub mod process;
pub mod prometheus;
pub mod run;
pub mod watch;

pub use memcg::Memcg;
pub use process::ChildGuard;
pub use run::{run, Binaries, Models, Options, Outcome, Sizes};

/// The scenarios `run-workload --scenario NAME` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    OomDuringLoad,
    Fixed,
    Killed,
    Crash,
    CrashLoop,
    Watch,
}

impl Scenario {
    pub const ALL: [Scenario; 6] =
        [Scenario::OomDuringLoad, Scenario::Fixed, Scenario::Killed, Scenario::Crash, Scenario::CrashLoop, Scenario::Watch];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::OomDuringLoad => "oom-during-load",
            Scenario::Fixed => "fixed",
            Scenario::Killed => "killed",
            Scenario::Crash => "crash",
            Scenario::CrashLoop => "crash-loop",
            Scenario::Watch => "watch",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for `--list`.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::OomDuringLoad => {
                "the bug report: --load eager, NLLB fits the memory cgroup, Aya does not; health says models_loaded: 1, then the OOM kill and ECONNRESET/ECONNREFUSED at the probe"
            }
            Scenario::Fixed => {
                "the fix: the same models and limit with --load background; Aya is FAILED with its budget reason, NLLB serves, and a smaller Aya (45% of the limit: it fits at its own size, not at the twice-its-size peak of a loader that maps and copies) loads beside it; no connection error, no reset"
            }
            Scenario::Killed => "another process SIGKILLs the server while the probe is using it: the verdict names the sender",
            Scenario::Crash => "the server faults (SIGSEGV) when Aya starts loading: the verdict says crash with the signal",
            Scenario::CrashLoop => {
                "the server under a supervisor loop, OOM-killed on each eager load and started again 3 times: one crash_loop verdict naming the supervisor"
            }
            Scenario::Watch => {
                "`tracer watch` as a host agent with the server's cgroup in scope: the eager load's OOM kill becomes an incident folder, a Prometheus counter (a real server scrapes the agent) and OTLP log records"
            }
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

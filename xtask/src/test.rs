//! The whole suite: unit tests of every crate and the end-to-end scenarios on the real
//! kernel, one at a time (they share the OOM killer, cgroups and tracepoints).
use anyhow::Result;
use clap::Args;

use crate::{
    exec::{command, exec, workspace_root},
    kernels, setup,
};

#[derive(Args)]
pub struct Options {
    /// Only tests whose name contains this
    filter: Option<String>,
    #[command(flatten)]
    kernels: kernels::Options,
}

pub fn run(opts: &Options) -> Result<()> {
    setup::run(&setup::Options {})?;
    if opts.kernels.kernels_only {
        return kernels::run(&opts.kernels);
    }
    let root = workspace_root();
    // The end-to-end tests drive the real binaries; build them with the tests. Default
    // members only: tracer-ebpf is built for the bpf target by tracer/build.rs.
    exec(command("cargo").current_dir(&root).args(["build", "--bins"]))?;
    let tracer = root.join("target/debug/tracer");
    let mut cmd = command("cargo");
    cmd.current_dir(&root).args(["test", "--no-fail-fast", "--"]).arg("--test-threads=1");
    if let Some(f) = &opts.filter {
        cmd.arg(f);
    }
    let suite = exec(cmd.env("TRACER_BIN", tracer).env("WORKLOAD_BIN", root.join("target/debug/workload")));
    kernels::after_suite(&opts.kernels, suite)
}

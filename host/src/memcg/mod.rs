//! The memory cgroup of a process: where it is, what it may use, what it uses.
//!
//! An OOM kill in a container is the memory cgroup's limit at work, and on a hybrid
//! machine the limit lives in the v1 hierarchy while v2 is mounted too; a parent's limit
//! binds every child below it. The tracer samples the cgroup to explain a kill, its doctor
//! and the workload check a load against the tightest limit before it happens: all three
//! locate and read it with this module, so they cannot disagree about which limit counts.
//!
//! One job a module: [`mounts`] (where the hierarchies are, from mountinfo),
//! [`membership`] (which cgroup a process is in, from /proc/PID/cgroup), [`control`]
//! (the v1 and v2 control files and their formats) and [`limits`] (the walk to the root
//! and the tightest limit on it). Versions are `1` and `2`, as the kernel numbers them.
pub mod control;
pub mod limits;
pub mod membership;
pub mod mounts;

pub use self::{
    control::{control_files, parse_keyed, parse_limit, parse_u64, parse_v1_limit, parse_v2_max, ControlFiles},
    limits::{levels, read_level, room, tightest, tightest_of_pid, Level},
    membership::{cgroup_dir, locate, locate_pid, memory_cgroup, Location},
    mounts::{has_memory_controller, parse_mountinfo, read_mounts, unescape, Mount, Mounts},
};

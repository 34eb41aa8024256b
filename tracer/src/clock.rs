//! Time: the kernel stamps records with CLOCK_MONOTONIC, a trace speaks wall-clock
//! nanoseconds since the Unix epoch. The offset between the two is measured once per
//! session so that every event of one trace is converted the same way.

/// CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock, measured once at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock { offset_ns: real as i128 - mono as i128 }
    }

    pub fn fixed(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    pub fn wall(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// Nanoseconds on `clock`.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the Unix epoch: the time base of every event.
pub fn wall_now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

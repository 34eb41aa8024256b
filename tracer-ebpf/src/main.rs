//! Kernel side of tracer: classic tracepoint programs filtered in the kernel on the
//! traced thread groups. Every program exits after one map lookup on the current TGID
//! unless it is one of the global probes (OOM victims, TCP resets, socket states).
#![no_std]
#![no_main]

mod file;
mod maps;
mod mem;
mod oom;
mod process;
mod record;
mod rss;
mod scope;
mod signal;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

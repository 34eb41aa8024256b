//! Names the file behind an fd from the kernel's own structures, at the syscall: the fd
//! table, the file's inode (device, inode number, size) and its dentry chain up through
//! the mounts. Offsets come from BTF via user space; any unknown offset or failed read
//! leaves the identity unknown rather than wrong.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str};
use tracer_common::{file_flags, kfield, FileIdentity, NAME_LEN};

use crate::maps::kernel_offset;

#[inline(always)]
unsafe fn read_ptr(base: *const u8, field: usize) -> Option<*const u8> {
    let off = kernel_offset(field)?;
    if base.is_null() {
        return None;
    }
    let p = unsafe { bpf_probe_read_kernel(base.add(off) as *const *const u8) }.ok()?;
    if p.is_null() { None } else { Some(p) }
}

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, field: usize) -> Option<T> {
    let off = kernel_offset(field)?;
    unsafe { bpf_probe_read_kernel(base.add(off) as *const T) }.ok()
}

/// The current task's `struct file *` for `fd`.
#[inline(always)]
unsafe fn file_of_fd(fd: u64) -> Option<*const u8> {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files = unsafe { read_ptr(task, kfield::TASK_FILES) }?;
    let fdt = unsafe { read_ptr(files, kfield::FILES_FDT) }?;
    let max_fds: u32 = unsafe { read_at(fdt, kfield::FDT_MAX_FDS) }?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fds = unsafe { read_ptr(fdt, kfield::FDT_FD) }?;
    let slot = unsafe { fds.add(fd as usize * 8) } as *const *const u8;
    let file = unsafe { bpf_probe_read_kernel(slot) }.ok()?;
    if file.is_null() { None } else { Some(file) }
}

/// Fills `out` with the identity of the current task's file `fd`. `out` lives in the
/// ring buffer (too large for the stack). Leaves `flags` without KNOWN when the file
/// cannot be read.
#[inline(always)]
pub unsafe fn identify(fd: u64, out: *mut FileIdentity) {
    unsafe {
        (*out).flags = 0;
        (*out).depth = 0;
        (*out).dev = 0;
        (*out).ino = 0;
        (*out).size = 0;
        (*out)._pad = 0;
    }
    let Some(file) = (unsafe { file_of_fd(fd) }) else {
        return;
    };
    let Some(inode) = (unsafe { read_ptr(file, kfield::FILE_INODE) }) else {
        return;
    };
    let (Some(ino), Some(size), Some(sb)) = (unsafe {
        (read_at::<u64>(inode, kfield::INODE_INO), read_at::<i64>(inode, kfield::INODE_SIZE), read_ptr(inode, kfield::INODE_SB))
    }) else {
        return;
    };
    let dev: u32 = unsafe { read_at(sb, kfield::SB_DEV) }.unwrap_or(0);
    unsafe {
        (*out).ino = ino;
        (*out).size = size;
        (*out).dev = dev;
        (*out).flags = file_flags::KNOWN;
    }
    unsafe { walk_path(file, out) };
}

/// The dentry chain from the file up to the root of its mount namespace, crossing each
/// mount at its mountpoint; component names leaf first.
#[inline(always)]
unsafe fn walk_path(file: *const u8, out: *mut FileIdentity) {
    let (Some(path_off), Some(dentry_off), Some(mnt_off), Some(mount_mnt)) = (
        kernel_offset(kfield::FILE_PATH),
        kernel_offset(kfield::PATH_DENTRY),
        kernel_offset(kfield::PATH_MNT),
        kernel_offset(kfield::MOUNT_MNT),
    ) else {
        return;
    };
    let (Some(name_off), Some(qname_off), Some(qlen_off)) =
        (kernel_offset(kfield::DENTRY_NAME), kernel_offset(kfield::QSTR_NAME), kernel_offset(kfield::QSTR_LEN))
    else {
        return;
    };
    let path = unsafe { file.add(path_off) };
    let Ok(mut dentry) = (unsafe { bpf_probe_read_kernel(path.add(dentry_off) as *const *const u8) }) else {
        return;
    };
    let Ok(vfsmount) = (unsafe { bpf_probe_read_kernel(path.add(mnt_off) as *const *const u8) }) else {
        return;
    };
    if dentry.is_null() || vfsmount.is_null() {
        return;
    }
    let mut mount = unsafe { vfsmount.sub(mount_mnt) };
    let Some(mut mnt_root) = (unsafe { read_ptr(vfsmount, kfield::VFSMOUNT_ROOT) }) else {
        return;
    };
    // One slot per step, a mount crossed leaving its slot empty, and every flag kept in
    // the record rather than in registers: the verifier then sees one state per step
    // (a loop whose state varies otherwise explodes past its million instructions).
    let names = unsafe { &mut (*out).names };
    for (i, slot) in names.iter_mut().enumerate() {
        slot[0] = 0;
        if dentry == mnt_root {
            // The top of this mount: go on from where it is mounted, or stop at the top.
            let Some(parent) = (unsafe { read_ptr(mount, kfield::MOUNT_PARENT) }) else {
                break;
            };
            if parent == mount {
                unsafe { (*out).flags |= file_flags::ROOTED };
                break;
            }
            let Some(mountpoint) = (unsafe { read_ptr(mount, kfield::MOUNT_MOUNTPOINT) }) else {
                break;
            };
            let Some(root) = (unsafe { read_ptr(parent.add(mount_mnt), kfield::VFSMOUNT_ROOT) }) else {
                break;
            };
            dentry = mountpoint;
            mount = parent;
            mnt_root = root;
            unsafe { (*out).depth = i as u32 + 1 };
            continue;
        }
        let Some(parent) = (unsafe { read_ptr(dentry, kfield::DENTRY_PARENT) }) else {
            break;
        };
        if parent == dentry {
            // A filesystem's root that is no mount's root here (a detached or internal
            // mount): the path is whole within that filesystem.
            unsafe { (*out).flags |= file_flags::ROOTED };
            break;
        }
        let qstr = unsafe { dentry.add(name_off) };
        let name_len: u32 = unsafe { bpf_probe_read_kernel(qstr.add(qlen_off) as *const u32) }.unwrap_or(0);
        if name_len as usize >= NAME_LEN {
            unsafe { (*out).flags |= file_flags::NAME_CUT };
        }
        let Ok(name) = (unsafe { bpf_probe_read_kernel(qstr.add(qname_off) as *const *const u8) }) else {
            break;
        };
        unsafe { bpf_probe_read_kernel_str(slot.as_mut_ptr().cast(), NAME_LEN as u32, name.cast()) };
        unsafe { (*out).depth = i as u32 + 1 };
        dentry = parent;
    }
}

/// Reads the current task's arguments (`mm->arg_start..arg_end`) into `out`; returns
/// (bytes read, whether they were cut).
#[inline(always)]
pub unsafe fn read_argv(out: &mut [u8; tracer_common::ARGV_LEN]) -> (u32, bool) {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Some(mm) = (unsafe { read_ptr(task, kfield::TASK_MM) }) else {
        return (0, false);
    };
    let (Some(start), Some(end)) = (unsafe { (read_at::<u64>(mm, kfield::MM_ARG_START), read_at::<u64>(mm, kfield::MM_ARG_END)) }) else {
        return (0, false);
    };
    if end <= start {
        return (0, false);
    }
    let total = end - start;
    let cut = total > tracer_common::ARGV_LEN as u64;
    let len = if cut { tracer_common::ARGV_LEN as u32 } else { total as u32 };
    // The verifier wants the size provably within the buffer.
    let len = len & (2 * tracer_common::ARGV_LEN as u32 - 1);
    if len == 0 || len > tracer_common::ARGV_LEN as u32 {
        return (0, false);
    }
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(out.as_mut_ptr().cast(), len, start as *const core::ffi::c_void)
    };
    if rc != 0 {
        return (0, false);
    }
    (len, cut)
}

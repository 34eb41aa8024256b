//! The guest's whole root file system, one gzipped cpio (newc) archive: busybox with its
//! applets linked, the release `tracer` and `tracer-stress` with the shared libraries
//! `ldd` names (the loader included), `/dev/console`, and `/init` (guest.sh).
use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use crate::exec::{command, output};

/// The guest's `/init`, run as PID 1.
pub const GUEST_INIT: &str = include_str!("guest.sh");

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// A cpio archive being put together; parents of every path are added as directories.
#[derive(Default)]
pub struct Cpio {
    members: Vec<(String, Member)>,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                self.members.push((at.clone(), Member::Dir));
            }
        }
    }

    fn push(&mut self, path: &str, m: Member) {
        let path = path.trim_start_matches('/').to_string();
        self.parents(&path);
        if matches!(m, Member::Dir) && !self.dirs.insert(path.clone()) {
            return;
        }
        self.members.push((path, m));
    }

    pub fn dir(&mut self, path: &str) {
        self.push(path, Member::Dir);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.push(path, Member::File { mode, data });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(path, Member::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.push(path, Member::CharDev { major, minor });
    }

    pub fn contains(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        self.members.iter().any(|(p, _)| p == path)
    }

    /// The archive in the `newc` format the kernel unpacks (no compression).
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, m)) in self.members.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match m {
                Member::Dir => (0o040755, &[], (0, 0)),
                Member::File { mode, data } => (0o100000 | mode, data, (0, 0)),
                Member::Symlink(target) => (0o120777, target.as_bytes(), (0, 0)),
                Member::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(m, Member::Dir) { 2 } else { 1 };
            newc_entry(&mut out, ino as u32 + 1, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    // magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// The absolute paths of the shared objects in `ldd`'s output, the loader included
/// (`linux-vdso.so.1` has no file and is left out).
pub fn ldd_paths(ldd: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in ldd.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if !paths.iter().any(|q| q == p) {
                paths.push(p.to_string());
            }
        }
    }
    paths
}

/// A program to put in the guest's `/bin`, with the libraries it needs.
pub struct Program<'a> {
    pub host: &'a Path,
    pub name: &'a str,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn add_with_libraries(cpio: &mut Cpio, p: &Program) -> Result<()> {
    cpio.file(&format!("bin/{}", p.name), 0o755, read(p.host)?);
    // A static program has no libraries: ldd fails on it, which is fine.
    let libs = output(command("ldd").arg(p.host)).map(|o| ldd_paths(&o)).unwrap_or_default();
    for lib in libs {
        if !cpio.contains(&lib) {
            cpio.file(&lib, 0o755, read(Path::new(&lib))?);
        }
    }
    Ok(())
}

/// The static busybox of `busybox-static` (a dynamic one works too: its libraries come along).
pub fn busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("busybox is missing: install it with `apt-get install busybox-static`")
}

/// Writes the gzipped archive to `out` and returns its size in bytes.
pub fn build(programs: &[Program], out: &Path) -> Result<u64> {
    let busybox = busybox()?;
    let mut cpio = Cpio::default();
    for d in ["dev", "proc", "sys", "tmp", "root", "etc", "run"] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    cpio.char_dev("dev/console", 5, 1);
    cpio.char_dev("dev/null", 1, 3);
    add_with_libraries(&mut cpio, &Program { host: &busybox, name: "busybox" })?;
    let applets = output(command(&busybox.display().to_string()).arg("--list"))
        .with_context(|| format!("`{} --list` failed: is it busybox?", busybox.display()))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && !a.contains('/')) {
        if applet != "busybox" {
            cpio.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    for p in programs {
        add_with_libraries(&mut cpio, p)?;
    }
    cpio.file("init", 0o755, GUEST_INIT.as_bytes().to_vec());
    let raw = cpio.to_newc();
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut gzip = command("gzip").args(["-c", "-6"]).stdin(Stdio::piped()).stdout(file).spawn().context("cannot run gzip")?;
    gzip.stdin.take().expect("piped").write_all(&raw).context("writing to gzip")?;
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip of the initramfs failed ({status})");
    }
    Ok(std::fs::metadata(out)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffc8a5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c0a000000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c09e00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c0a2a0000)\n";
        assert_eq!(
            ldd_paths(ldd),
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
        );
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn newc_archive_has_parents_padding_and_trailer() {
        let mut c = Cpio::default();
        c.file("/bin/x", 0o755, b"abc".to_vec());
        c.symlink("bin/sh", "busybox");
        c.char_dev("dev/console", 5, 1);
        let raw = c.to_newc();
        assert!(raw.starts_with(b"070701"));
        assert_eq!(raw.len() % 4, 0);
        let text = String::from_utf8_lossy(&raw);
        // bin is added once, before its members.
        assert_eq!(text.matches("bin\0").count(), 1);
        assert!(text.find("bin\0").unwrap() < text.find("bin/x\0").unwrap());
        assert!(text.contains("TRAILER!!!\0"));
        // Header of bin/x: mode 0100755, size 3, name size 6 ("bin/x" + NUL).
        let at = text.find("bin/x\0").unwrap() - 110;
        let header = &text[at..at + 110];
        assert_eq!(&header[14..22], format!("{:08X}", 0o100755).as_str());
        assert_eq!(&header[54..62], "00000003");
        assert_eq!(&header[94..102], "00000006");
        // The console is a character device 5:1.
        let at = text.find("dev/console\0").unwrap() - 110;
        let header = &text[at..at + 110];
        assert_eq!(&header[14..22], format!("{:08X}", 0o020600).as_str());
        assert_eq!(&header[78..86], "00000005");
        assert_eq!(&header[86..94], "00000001");
    }

    #[test]
    fn guest_init_is_a_shell_script_with_every_scenario() {
        assert!(GUEST_INIT.starts_with("#!/bin/sh\n"));
        for s in super::super::Scenario::ALL {
            assert!(GUEST_INIT.contains(&format!("begin {}\n", s.name())), "guest.sh does not run {}", s.name());
        }
        assert!(GUEST_INIT.contains("poweroff -f"));
    }
}

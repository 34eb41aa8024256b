//! Finding (or mounting) tracefs and reading tracepoint format files.
use std::path::{Path, PathBuf};

use super::{format::Format, CaptureError};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// The mounted tracefs; mounts it at /sys/kernel/tracing when it is not mounted and
    /// we may (root), as most distributions do at boot.
    pub fn locate_or_mount() -> Result<Tracefs, CaptureError> {
        if let Some(t) = Self::locate() {
            return Ok(t);
        }
        let target = Path::new(CANDIDATES[0]);
        if target.is_dir() {
            let src = c"nodev";
            let dst = c"/sys/kernel/tracing";
            let fstype = c"tracefs";
            // SAFETY: all pointers are valid NUL-terminated strings; data is null.
            let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
            if rc == 0 {
                tracing::info!("mounted tracefs at /sys/kernel/tracing");
                if let Some(t) = Self::locate() {
                    return Ok(t);
                }
            }
        }
        Err(CaptureError::NoTracefs)
    }

    /// The mounted tracefs whose `events` this process can see; never mounts.
    pub fn locate() -> Option<Tracefs> {
        CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(|p| Tracefs { root: p.to_path_buf() })
    }

    /// A tracefs at `root`, taken as it is (tests).
    pub fn at(root: impl Into<std::path::PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn exists(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    pub fn format(&self, category: &str, name: &str) -> Result<Format, CaptureError> {
        let path = self.root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| CaptureError::TracepointMissing {
            tracepoint: format!("{category}:{name}"),
            source,
        })?;
        Format::parse(&text).map_err(|source| CaptureError::BadFormat { path, source })
    }
}

//! Debian kernels for the matrix, fetched once and cached outside the clone
//! (`/var/cache/tracer-kernels`, or `$TRACER_KERNEL_CACHE`, or `--kernel-cache`).
//!
//! Each suite has its own private apt state under the cache (`<cache>/<suite>/apt.conf`,
//! `sources.list`, `lists/`, `archives/`): the system's sources, package lists and
//! archives are never touched. From the suite's `linux-image-amd64` metapackage we learn
//! the current kernel, download its unsigned image package, keep `vmlinuz-RELEASE` (and
//! its `config-RELEASE`) and drop the package and the indexes: every driver the guest needs (serial
//! console, initramfs, cgroup v2, BPF, tracefs, loopback) is built into Debian's kernels,
//! so no modules are kept.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::exec::command;

pub const DEFAULT_CACHE: &str = "/var/cache/tracer-kernels";
pub const CACHE_ENV: &str = "TRACER_KERNEL_CACHE";
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://security.debian.org/debian-security";

/// A Debian release whose kernel the matrix boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distro {
    /// `debian11`: the name on the command line and of the evidence folder.
    pub key: &'static str,
    pub label: &'static str,
    pub suite: &'static str,
    /// The kernel series the suite ships; a release outside it is refused.
    pub series: &'static str,
}

pub const DISTROS: [Distro; 3] = [
    Distro { key: "debian11", label: "Debian 11", suite: "bullseye", series: "5.10." },
    Distro { key: "debian12", label: "Debian 12", suite: "bookworm", series: "6.1." },
    Distro { key: "debian13", label: "Debian 13", suite: "trixie", series: "6.12." },
];

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub distro: Distro,
    /// `uname -r` of the image, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The package it came from, e.g. `linux-image-6.1.0-57-amd64-unsigned 6.1.192-3`.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// What fetching one kernel gave.
pub enum Fetched {
    /// `downloaded`: how long the archive took (index update, download, extraction);
    /// None when the cached kernel was used without asking the archive.
    Ready { kernel: Kernel, downloaded: Option<Duration> },
    /// The kernel could not be had; the reason names the cause and the fix.
    Skipped { distro: Distro, why: String },
}

/// `--kernel-cache`, else `$TRACER_KERNEL_CACHE`, else `/var/cache/tracer-kernels`.
pub fn cache_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The suite's private `sources.list`: its main archive and its security updates
/// (where Debian publishes new kernels between point releases).
pub fn sources_list(suite: &str) -> String {
    format!(
        "# Written by the kernel matrix of `cargo xtask test`: the {suite} kernel only, never the system's sources.\n\
         deb [signed-by={KEYRING}] {MIRROR} {suite} main\n\
         deb [signed-by={KEYRING}] {SECURITY} {suite}-security main\n"
    )
}

/// The private apt configuration of one suite's directory, given with `apt-get -c`: it is
/// read after the system's (so proxies configured there still apply) and points every
/// list, cache and archive directory into `dir`.
pub fn apt_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "// Written by the kernel matrix of `cargo xtask test`: a private apt state; the system's is untouched.\n\
         Dir::Etc::SourceList \"{d}/sources.list\";\n\
         Dir::Etc::SourceParts \"/dev/null\";\n\
         Dir::Etc::Preferences \"/dev/null\";\n\
         Dir::Etc::PreferencesParts \"/dev/null\";\n\
         Dir::State::Lists \"{d}/lists\";\n\
         Dir::Cache \"{d}/apt-cache\";\n\
         Dir::Cache::Archives \"{d}/archives\";\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Languages \"none\";\n\
         Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n"
    )
}

/// The versioned image package `linux-image-amd64` depends on, from `apt-cache show`:
/// `Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)` gives `linux-image-6.1.0-57-amd64`.
pub fn image_from_depends(show: &str) -> Option<String> {
    let deps = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    deps.split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .find(|name| name.starts_with("linux-image-") && *name != "linux-image-amd64")
        .map(str::to_string)
}

/// `Version:` of an `apt-cache show --no-all-versions` answer.
pub fn version_of(show: &str) -> Option<String> {
    show.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| v.trim().to_string())
}

/// The stamp of a cached kernel: `release=`, `package=`.
fn stamp_text(k: &Kernel) -> String {
    format!("release={}\npackage={}\n", k.release, k.package)
}

fn cached(distro: Distro, dir: &Path) -> Option<Kernel> {
    let stamp = fs::read_to_string(dir.join("kernel.txt")).ok()?;
    let field = |key: &str| stamp.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    let release = field("release=")?;
    let package = field("package=")?;
    let vmlinuz = dir.join(format!("vmlinuz-{release}"));
    vmlinuz.is_file().then_some(Kernel { distro, release, package, vmlinuz })
}

/// The kernel of `distro`: the cached one, or (first time, or `refresh`) the current one
/// from Debian's archive. Never fails: what cannot be had is `Skipped` with its reason.
pub fn fetch(distro: Distro, cache: &Path, refresh: bool) -> Fetched {
    let dir = cache.join(distro.suite);
    let have = cached(distro, &dir);
    if let (Some(kernel), false) = (&have, refresh) {
        println!("xtask: kernels: {} {} cached in {}", distro.label, kernel.release, dir.display());
        return Fetched::Ready { kernel: kernel.clone(), downloaded: None };
    }
    let started = Instant::now();
    match download(distro, &dir) {
        Ok(kernel) => {
            let took = started.elapsed();
            println!("xtask: kernels: {} {} ready ({}, {:.1} s)", distro.label, kernel.release, kernel.package, took.as_secs_f64());
            Fetched::Ready { kernel, downloaded: Some(took) }
        }
        Err(e) => match have {
            Some(kernel) => {
                eprintln!(
                    "xtask: kernels: WARNING: cannot refresh the {} kernel ({e:#}); using the cached {}",
                    distro.label, kernel.release
                );
                Fetched::Ready { kernel, downloaded: None }
            }
            None => Fetched::Skipped { distro, why: format!("{e:#}") },
        },
    }
}

/// Runs a command quietly; on failure the error carries the end of its stderr.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(6)..].join("\n  ");
        bail!("{what} failed ({}):\n  {tail}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt(program: &str, conf: &Path) -> Command {
    let mut cmd = command(program);
    cmd.arg("-q").arg("-c").arg(conf).env("DEBIAN_FRONTEND", "noninteractive").env("LC_ALL", "C");
    cmd
}

fn download(distro: Distro, dir: &Path) -> Result<Kernel> {
    if !Path::new(KEYRING).is_file() {
        bail!("{KEYRING} is missing: install Debian's archive keys with `apt-get install debian-archive-keyring`");
    }
    for sub in ["lists/partial", "archives/partial", "apt-cache"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    fs::write(dir.join("sources.list"), sources_list(distro.suite))?;
    let conf = dir.join("apt.conf");
    fs::write(&conf, apt_conf(dir))?;
    println!("xtask: kernels: asking Debian's archive for the {} ({}) kernel", distro.label, distro.suite);
    // apt-get update exits 0 when indexes fail to download (they are "ignored"); with
    // --error-on=any it fails, and its warnings are looked at too for older apt.
    run_quiet(apt("apt-get", &conf).args(["update", "--error-on=any"]), &format!("apt-get update of {} (private state in {})", distro.suite, dir.display()))
        .and_then(|_| {
            if has_package_index(&dir.join("lists")) {
                Ok(())
            } else {
                bail!("apt-get update of {} left no package index in {}", distro.suite, dir.join("lists").display())
            }
        })
        .map_err(|e| {
            e.context(format!(
                "cannot reach Debian's archive ({MIRROR}, {SECURITY}) for {}: check the network (or a proxy in /etc/apt/apt.conf.d)",
                distro.suite
            ))
        })?;
    let meta = run_quiet(apt("apt-cache", &conf).args(["show", "--no-all-versions", "linux-image-amd64"]), "apt-cache show linux-image-amd64")?;
    let image = image_from_depends(&meta)
        .with_context(|| format!("linux-image-amd64 of {} names no kernel package in its Depends:\n{meta}", distro.suite))?;
    let release = image.trim_start_matches("linux-image-").to_string();
    if !release.starts_with(distro.series) {
        bail!("{} ships kernel {release}, not the {}x series the matrix is for: update DISTROS in xtask/src/kernels/fetch.rs", distro.suite, distro.series);
    }
    // The unsigned image is the same kernel without the Secure Boot signature.
    let unsigned = format!("{image}-unsigned");
    let (package, show) = match run_quiet(apt("apt-cache", &conf).args(["show", "--no-all-versions", unsigned.as_str()]), "apt-cache show") {
        Ok(show) if version_of(&show).is_some() => (unsigned, show),
        _ => {
            let show = run_quiet(apt("apt-cache", &conf).args(["show", "--no-all-versions", image.as_str()]), &format!("apt-cache show {image}"))?;
            (image.clone(), show)
        }
    };
    let version = version_of(&show).with_context(|| format!("apt-cache show {package} gave no Version"))?;
    if let Some(k) = cached(distro, dir) {
        if k.package == format!("{package} {version}") {
            println!("xtask: kernels: {} {} is current", distro.label, k.release);
            tidy(dir);
            return Ok(k);
        }
    }
    let work = dir.join("download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    println!("xtask: kernels: downloading {package} {version}");
    run_quiet(apt("apt-get", &conf).current_dir(&work).arg("download").arg(format!("{package}={version}")), &format!("apt-get download {package}"))?;
    let deb = fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb in {}", work.display()))?;
    extract_boot(&deb, &work)?;
    let boot = work.join("boot");
    let vmlinuz = dir.join(format!("vmlinuz-{release}"));
    fs::rename(boot.join(format!("vmlinuz-{release}")), &vmlinuz)
        .with_context(|| format!("{} has no boot/vmlinuz-{release}", deb.display()))?;
    let _ = fs::rename(boot.join(format!("config-{release}")), dir.join(format!("config-{release}")));
    // Older kernels of this suite are of no use any more.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("vmlinuz-") || name.starts_with("config-")) && !name.ends_with(&release) {
            let _ = fs::remove_file(entry.path());
        }
    }
    tidy(dir);
    let kernel = Kernel { distro, release, package: format!("{package} {version}"), vmlinuz };
    fs::write(dir.join("kernel.txt"), stamp_text(&kernel))?;
    Ok(kernel)
}

/// Only the image is kept: the package indexes come again with --refresh-kernels.
fn tidy(dir: &Path) {
    for sub in ["download", "lists", "archives", "apt-cache"] {
        let _ = fs::remove_dir_all(dir.join(sub));
    }
}

/// Whether apt's lists directory holds a `Packages` index (compressed or not).
fn has_package_index(lists: &Path) -> bool {
    fs::read_dir(lists).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains("_Packages"))).unwrap_or(false)
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x ./boot/vmlinuz-* ./boot/config-*` into `dest`:
/// only the image and its config, not the hundreds of MiB of modules.
fn extract_boot(deb: &Path, dest: &Path) -> Result<()> {
    let mut dpkg = command("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb (it comes with dpkg)")?;
    let tar = command("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .args(["--wildcards", "./boot/vmlinuz-*", "./boot/config-*"])
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("cannot run tar")?;
    let status = dpkg.wait()?;
    if !status.success() || !tar.success() {
        bail!("extracting /boot from {} failed (dpkg-deb {status}, tar {tar})", deb.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_state_is_private_to_the_cache() {
        let conf = apt_conf(Path::new("/c/bookworm"));
        for line in [
            "Dir::Etc::SourceList \"/c/bookworm/sources.list\";",
            "Dir::Etc::SourceParts \"/dev/null\";",
            "Dir::State::Lists \"/c/bookworm/lists\";",
            "Dir::Cache \"/c/bookworm/apt-cache\";",
            "Dir::Cache::Archives \"/c/bookworm/archives\";",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing in\n{conf}");
        }
        // Nothing points at the system's own state.
        assert!(!conf.contains("/var/lib/apt") && !conf.contains("/etc/apt"), "{conf}");
    }

    #[test]
    fn sources_are_the_suite_and_its_security_updates_signed_by_debian() {
        let s = sources_list("bullseye");
        let debs: Vec<&str> = s.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(
            debs,
            [
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/debian-security bullseye-security main",
            ]
        );
    }

    #[test]
    fn kernel_package_from_the_metapackage() {
        let show = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+3)\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\nDescription: Linux for 64-bit PCs (meta-package)\n";
        assert_eq!(image_from_depends(show).as_deref(), Some("linux-image-6.1.0-57-amd64"));
        assert_eq!(version_of(show).as_deref(), Some("6.1.192-3"));
        let trixie = "Depends: linux-image-6.12.118+deb13-amd64 (= 6.12.118-1)\n";
        assert_eq!(image_from_depends(trixie).as_deref(), Some("linux-image-6.12.118+deb13-amd64"));
        assert_eq!(image_from_depends("Package: x\nDepends: libc6\n"), None);
        assert_eq!(image_from_depends("Package: x\n"), None);
    }

    #[test]
    fn cache_dir_flag_then_env_then_default() {
        assert_eq!(cache_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
        if std::env::var_os(CACHE_ENV).is_none() {
            assert_eq!(cache_dir(None), PathBuf::from(DEFAULT_CACHE));
        }
    }

    #[test]
    fn series_match_their_suites() {
        for d in DISTROS {
            assert!(d.series.ends_with('.'), "{d:?}: a series must end with a dot (5.10. is not 5.100)");
        }
    }
}

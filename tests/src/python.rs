//! A Python environment with the programs users run (gunicorn, uvicorn, FastAPI,
//! requests), installed from PyPI once and kept outside the clone between runs.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The pinned packages; a change rebuilds the environment.
pub const REQUIREMENTS: &[&str] = &["gunicorn==23.0.0", "uvicorn==0.32.1", "fastapi==0.115.6", "requests==2.32.3"];

/// Where it lives: $TRACER_TEST_VENV, else /var/cache/tracer-test-venv.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("TRACER_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/tracer-test-venv"))
}

/// The environment, built when missing or out of date; why not when it cannot be (no
/// python3 -m venv, PyPI unreachable): the caller skips loudly.
pub fn venv() -> Result<PathBuf, String> {
    let dir = venv_dir();
    let stamp = dir.join("tracer-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && dir.join("bin/gunicorn").is_file() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()));
    let python = python.ok_or("no python3 on this machine (`apt-get install python3 python3-venv`)")?;
    let made = Command::new(python).args(["-m", "venv"]).arg(&dir).stdout(Stdio::null()).output().map_err(|e| e.to_string())?;
    if !made.status.success() {
        return Err(format!("python3 -m venv {} failed: {}", dir.display(), String::from_utf8_lossy(&made.stderr).trim()));
    }
    let pip = Command::new(dir.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(REQUIREMENTS).output();
    match pip {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("pip install {} failed (is PyPI reachable?): {}", REQUIREMENTS.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
        }
        Err(e) => return Err(format!("cannot run pip: {e}")),
    }
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The folder of the test's Python apps (tests/python).
pub fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

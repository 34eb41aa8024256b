//! The models the service was asked to serve and the state of each, as Triton reports
//! model state: UNLOADED, LOADING, READY, FAILED with a reason.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::checkpoint::Arch;
use crate::translate::Translator;

/// `--model NAME=DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub dir: PathBuf,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dir) = s.split_once('=').ok_or_else(|| format!("--model {s:?}: use NAME=DIR, e.g. nllb=/models/nllb-200"))?;
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!("--model {s:?}: the name may use letters, digits, - and _ only"));
        }
        if dir.is_empty() {
            return Err(format!("--model {s:?}: the folder is empty"));
        }
        Ok(Self { name: name.to_string(), dir: PathBuf::from(dir) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Unloaded,
    Loading,
    Ready,
    Failed,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unloaded => "UNLOADED",
            Self::Loading => "LOADING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
        }
    }
}

/// Everything `/models` shows about one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub dir: PathBuf,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Bytes of weights at the dtype the model runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Bytes read so far while LOADING; equal to `bytes` once READY.
    pub loaded_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
}

/// One model: its status (locked briefly, never across a load) and, once READY, the
/// translator (locked for the length of one translation).
pub struct ModelSlot {
    pub spec: ModelSpec,
    status: Mutex<ModelStatus>,
    translator: Mutex<Option<Arc<Mutex<Translator>>>>,
    pub progress: Arc<AtomicU64>,
}

/// Poisoning only means another request panicked mid-update; the status itself is
/// plain data and still the best answer we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ModelSlot {
    fn new(spec: ModelSpec) -> Self {
        let status = ModelStatus {
            name: spec.name.clone(),
            dir: spec.dir.clone(),
            state: State::Unloaded,
            reason: None,
            arch: None,
            device: None,
            dtype: None,
            bytes: None,
            loaded_bytes: 0,
            load_seconds: None,
        };
        Self { spec, status: Mutex::new(status), translator: Mutex::new(None), progress: Arc::new(AtomicU64::new(0)) }
    }

    pub fn status(&self) -> ModelStatus {
        let mut s = lock(&self.status).clone();
        s.loaded_bytes = self.progress.load(Ordering::Relaxed);
        s
    }

    pub fn update(&self, f: impl FnOnce(&mut ModelStatus)) {
        f(&mut lock(&self.status));
    }

    /// Moves UNLOADED or FAILED to LOADING; false when a load is running or done.
    pub fn begin_load(&self) -> bool {
        let mut s = lock(&self.status);
        if matches!(s.state, State::Loading | State::Ready) {
            return false;
        }
        s.state = State::Loading;
        s.reason = None;
        s.load_seconds = None;
        self.progress.store(0, Ordering::Relaxed);
        true
    }

    /// FAILED with `reason`, made one line of bounded length whatever its source.
    pub fn fail(&self, reason: String) {
        *lock(&self.translator) = None;
        let reason = crate::reason::one_line(&reason);
        self.update(|s| {
            s.state = State::Failed;
            s.reason = Some(reason);
        });
    }

    pub fn ready(&self, translator: Translator, seconds: f64) {
        *lock(&self.translator) = Some(Arc::new(Mutex::new(translator)));
        self.update(|s| {
            s.state = State::Ready;
            s.load_seconds = Some(seconds);
        });
    }

    pub fn translator(&self) -> Option<Arc<Mutex<Translator>>> {
        lock(&self.translator).clone()
    }
}

/// All the models, in the order they were given (which is the load order).
pub struct Registry {
    slots: Vec<Arc<ModelSlot>>,
}

impl Registry {
    pub fn new(specs: Vec<ModelSpec>) -> Result<Self, String> {
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(format!("--model {}: the name is given twice", spec.name));
            }
        }
        Ok(Self { slots: specs.into_iter().map(|s| Arc::new(ModelSlot::new(s))).collect() })
    }

    pub fn slots(&self) -> &[Arc<ModelSlot>] {
        &self.slots
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ModelSlot>> {
        self.slots.iter().find(|s| s.spec.name == name)
    }

    pub fn statuses(&self) -> Vec<ModelStatus> {
        self.slots.iter().map(|s| s.status()).collect()
    }

    pub fn ready_count(&self) -> usize {
        self.statuses().iter().filter(|s| s.state == State::Ready).count()
    }

    pub fn lock_translator(t: &Mutex<Translator>) -> MutexGuard<'_, Translator> {
        lock(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse_and_reject_bad_ones() {
        let spec: ModelSpec = "nllb=/m/nllb".parse().unwrap();
        assert_eq!(spec, ModelSpec { name: "nllb".into(), dir: "/m/nllb".into() });
        assert!("nllb".parse::<ModelSpec>().unwrap_err().contains("NAME=DIR"));
        assert!("a b=/x".parse::<ModelSpec>().is_err());
        assert!("a=".parse::<ModelSpec>().is_err());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a: ModelSpec = "a=/x".parse().unwrap();
        assert!(Registry::new(vec![a.clone(), a]).is_err());
    }

    #[test]
    fn loads_only_start_from_unloaded_or_failed() {
        let r = Registry::new(vec!["a=/x".parse().unwrap()]).unwrap();
        let slot = &r.slots()[0];
        assert!(slot.begin_load());
        assert!(!slot.begin_load());
        slot.fail("no".into());
        assert_eq!(slot.status().state, State::Failed);
        assert_eq!(slot.status().reason.as_deref(), Some("no"));
        assert!(slot.begin_load());
        assert_eq!(slot.status().reason, None);
        assert_eq!(r.ready_count(), 0);
    }

    #[test]
    fn a_failed_reason_is_one_bounded_line() {
        let r = Registry::new(vec!["a=/x".parse().unwrap()]).unwrap();
        let slot = &r.slots()[0];
        assert!(slot.begin_load());
        let backtrace = "   0: candle_core::error::Error::bt\n             at /src/error.rs:260:25\n";
        slot.fail(format!("/m: weights do not match:\n  shape   mismatch\n{backtrace}"));
        assert_eq!(slot.status().reason.as_deref(), Some("/m: weights do not match: shape mismatch"));
        assert!(slot.begin_load());
        slot.fail(format!("{}; do this", "x".repeat(1000)));
        let reason = slot.status().reason.unwrap();
        assert_eq!(reason.chars().count(), crate::reason::MAX_REASON_CHARS);
        assert!(reason.ends_with("; do this"), "{reason}");
    }
}

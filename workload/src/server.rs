//! The HTTP API: liveness, readiness, model state, translation, reload.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::loader::{Loader, ReloadError};
use crate::reason::one_line;
use crate::registry::{ModelStatus, Registry, State as ModelState};

/// Longest text accepted by `/translate` unless `--max-text-chars` says otherwise.
pub const DEFAULT_MAX_TEXT_CHARS: usize = 2000;

pub struct AppState {
    pub registry: Arc<Registry>,
    pub loader: Loader,
    pub max_text_chars: usize,
    pub started: Instant,
    /// Set on SIGTERM/SIGINT (see [`crate::shutdown`]).
    pub shutting_down: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, loader: Loader, max_text_chars: usize) -> AppState {
        AppState { registry, loader, max_text_chars, started: Instant::now(), shutting_down: Default::default() }
    }

    /// From now on health and readiness say 503 and no new work starts.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.loader.cancel();
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn shutting_down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down", "ready": false}))).into_response()
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/models", get(models))
        .route("/models/{name}/load", post(load_model))
        .route("/translate", post(translate))
        .fallback(not_found)
        .with_state(state)
}

/// A JSON error body with the status that says whose fault it was.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: use GET /health, /ready, /models or POST /translate, /models/{name}/load")
}

/// Liveness: answers as long as the process lives, whatever the models do; 503 once it
/// is shutting down, so that a balancer stops sending work here.
async fn health(State(app): State<Arc<AppState>>) -> Response {
    if app.is_shutting_down() {
        return shutting_down();
    }
    Json(json!({
        "status": "ok",
        "models_loaded": app.registry.ready_count(),
        "models_total": app.registry.slots().len(),
        "uptime_seconds": app.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

/// Readiness: 200 only when every model is READY (and the server is not shutting down).
async fn ready(State(app): State<Arc<AppState>>) -> Response {
    if app.is_shutting_down() {
        return shutting_down();
    }
    let statuses = app.registry.statuses();
    let all_ready = statuses.iter().all(|s| s.state == ModelState::Ready);
    let models: serde_json::Map<String, serde_json::Value> = statuses
        .iter()
        .map(|s| {
            let mut v = json!({"state": s.state});
            if let Some(reason) = &s.reason {
                v["reason"] = json!(reason);
            }
            (s.name.clone(), v)
        })
        .collect();
    let status = if all_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": all_ready, "models": models}))).into_response()
}

async fn models(State(app): State<Arc<AppState>>) -> Json<Vec<ModelStatus>> {
    Json(app.registry.statuses())
}

async fn load_model(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let slot = app
        .registry
        .get(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown model {name:?}: see GET /models")))?;
    app.loader.reload(slot).map_err(|e| {
        let status = match e {
            ReloadError::Busy { .. } => StatusCode::CONFLICT,
            ReloadError::Stopped => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"model": name, "queued": true}))).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct TranslateRequest {
    pub text: String,
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub model: Option<String>,
}

async fn translate(
    State(app): State<Arc<AppState>>,
    payload: Result<Json<TranslateRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if app.is_shutting_down() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down: retry on another instance or after the restart"));
    }
    let Json(req) = payload.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("{}; send {{\"text\": ..., \"source\": \"eng_Latn\", \"target\": \"fra_Latn\", \"model\": optional}}", e.body_text()),
        )
    })?;
    if req.text.trim().is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "text is empty"));
    }
    let chars = req.text.chars().count();
    if chars > app.max_text_chars {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("text is {chars} characters, the limit is {} (--max-text-chars)", app.max_text_chars),
        ));
    }
    let started = Instant::now();
    let registry = app.registry.clone();
    // Choosing the model locks translators to ask about languages, and a translator is
    // locked while it translates: both off the async workers, or a few concurrent
    // translations would stall accepting, /health and a clean shutdown.
    let (name, outcome) = tokio::task::spawn_blocking(move || {
        let (name, translator) = pick_model(&registry, &req)?;
        let mut t = Registry::lock_translator(&translator);
        Ok::<_, ApiError>((name, t.translate(&req.text, &req.source, &req.target)))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("translation task failed: {e}")))??;
    match outcome {
        Ok(t) => Ok(Json(json!({
            "model": name,
            "text": t.text,
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "seconds": started.elapsed().as_secs_f64(),
        }))),
        Err(e) if e.is_client_error() => Err(ApiError::new(StatusCode::BAD_REQUEST, one_line(&e.to_string()))),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, one_line(&e.to_string()))),
    }
}

type Picked = (String, Arc<std::sync::Mutex<crate::translate::Translator>>);

/// The requested model if it is READY, or the first READY model that knows both
/// languages.
fn pick_model(registry: &Registry, req: &TranslateRequest) -> Result<Picked, ApiError> {
    if let Some(name) = &req.model {
        let slot = registry
            .get(name)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown model {name:?}: see GET /models")))?;
        let status = slot.status();
        return match slot.translator() {
            Some(t) if status.state == ModelState::Ready => Ok((name.clone(), t)),
            _ => Err(not_ready(&status)),
        };
    }
    let mut ready_but_unsuitable = Vec::new();
    for slot in registry.slots() {
        if let Some(t) = slot.translator() {
            let suitable = {
                let guard = Registry::lock_translator(&t);
                guard.supports(&req.source) && guard.supports(&req.target)
            };
            if suitable {
                return Ok((slot.spec.name.clone(), t));
            }
            ready_but_unsuitable.push(slot.spec.name.clone());
        }
    }
    if !ready_but_unsuitable.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "no ready model translates {} -> {} (ready: {}); use FLORES-200 codes like eng_Latn",
                req.source,
                req.target,
                ready_but_unsuitable.join(", ")
            ),
        ));
    }
    let states: Vec<String> = registry.statuses().iter().map(describe).collect();
    Err(ApiError::new(StatusCode::CONFLICT, format!("no model is ready yet: {}; retry later", states.join(", "))))
}

fn describe(s: &ModelStatus) -> String {
    match &s.reason {
        Some(reason) => format!("{} {} ({reason})", s.name, s.state.as_str()),
        None => format!("{} {}", s.name, s.state.as_str()),
    }
}

fn not_ready(status: &ModelStatus) -> ApiError {
    let reason = status.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
    let hint = match status.state {
        ModelState::Failed => format!("; fix the cause and POST /models/{}/load to retry", status.name),
        _ => "; retry when GET /ready says READY".to_string(),
    };
    ApiError::new(
        StatusCode::CONFLICT,
        format!("model {} is {}{reason}{hint}", status.name, status.state.as_str()),
    )
}

//! The admin HTTP API (axum): `GET /status` (JSON), `GET /metrics` (Prometheus text),
//! `GET /healthz`; `POST /pause` and `POST /resume` need the admin token
//! (`Authorization: Bearer <token>`). It listens on localhost unless configured
//! otherwise.

use crate::config::Secret;
use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use multiaz_engine::OperatorRequest;
use serde::Serialize;
use tokio::sync::mpsc;

#[derive(Clone)]
struct AdminState {
    cluster: String,
    telemetry: Telemetry,
    operator: mpsc::UnboundedSender<OperatorRequest>,
    token: Option<Secret>,
}

/// What `GET /status` returns: the engine's status under the cluster's name.
#[derive(Serialize)]
struct StatusBody {
    cluster: String,
    #[serde(flatten)]
    status: multiaz_engine::EngineStatus,
}

pub fn router(
    cluster: String,
    telemetry: Telemetry,
    operator: mpsc::UnboundedSender<OperatorRequest>,
    token: Option<Secret>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(AdminState {
            cluster,
            telemetry,
            operator,
            token,
        })
}

async fn healthz(State(s): State<AdminState>) -> Response {
    match s.telemetry.status() {
        Some(_) if !s.operator.is_closed() => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "engine not running\n").into_response(),
    }
}

async fn status(State(s): State<AdminState>) -> Response {
    match s.telemetry.status() {
        Some(status) => Json(StatusBody {
            cluster: s.cluster.clone(),
            status,
        })
        .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "engine not started yet\n").into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.telemetry.metrics_text(),
    )
        .into_response()
}

async fn pause(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    operate(&s, &headers, OperatorRequest::Pause)
}

async fn resume(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    operate(&s, &headers, OperatorRequest::Resume)
}

fn operate(s: &AdminState, headers: &HeaderMap, request: OperatorRequest) -> Response {
    if let Err(refused) = authorize(s.token.as_ref(), headers) {
        return refused.into_response();
    }
    let what = format!("{request:?}");
    match s.operator.send(request) {
        Ok(()) => {
            tracing::info!("admin request accepted: {what}");
            (StatusCode::ACCEPTED, format!("{what} accepted\n")).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine not running\n").into_response(),
    }
}

/// Checks the bearer token in constant time; never logs what was sent.
fn authorize(
    token: Option<&Secret>,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = token else {
        return Err((
            StatusCode::FORBIDDEN,
            "mutating calls are disabled: no admin token is configured ([admin] token_file)\n",
        ));
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(sent.as_bytes(), token.expose()) {
        Ok(())
    } else {
        tracing::warn!("admin request refused: missing or wrong token");
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin token\n"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn a_missing_or_wrong_token_is_refused() {
        let token = Secret::new(b"right-token".to_vec());
        let mut h = HeaderMap::new();
        assert_eq!(
            authorize(Some(&token), &h).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(authorize(Some(&token), &h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer right-token".parse().unwrap());
        assert!(authorize(Some(&token), &h).is_ok());
        assert_eq!(authorize(None, &h).unwrap_err().0, StatusCode::FORBIDDEN);
    }
}

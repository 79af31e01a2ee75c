//! Talking to a running sidecar's admin API (`multiaz status`, `multiaz check`).

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// Sends one request; returns the status and the body as text.
pub async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<(StatusCode, String), String> {
    call_with(admin, method, path, token, Vec::new()).await
}

/// [`call`] with a JSON body.
pub async fn call_with(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&[u8]>,
    body: Vec<u8>,
) -> Result<(StatusCode, String), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        let t = String::from_utf8_lossy(t);
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("admin API at {admin}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the admin API at {admin} did not answer within 5 s"
            ))
        })
}

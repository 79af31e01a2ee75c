//! Talking to a running sidecar's admin API (`multiaz status`, the operator commands,
//! `multiaz check`, the chaos runner): one HTTP/1.1 request per connection, over TLS
//! when the API is configured with it.

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub use crate::config::AdminEndpoint;

/// Sends one request; returns the status and the body as text.
pub async fn call(
    admin: &AdminEndpoint,
    method: Method,
    path: &str,
    token: Option<&[u8]>,
) -> Result<(StatusCode, String), String> {
    call_with(admin, method, path, token, Vec::new()).await
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// [`call`] with a JSON body.
pub async fn call_with(
    admin: &AdminEndpoint,
    method: Method,
    path: &str,
    token: Option<&[u8]>,
    body: Vec<u8>,
) -> Result<(StatusCode, String), String> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, admin.addr.to_string());
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
    if admin.tls_ca_file.is_none() && !admin.addr.ip().is_loopback() {
        return Err(format!(
            "{admin}: the admin token would cross the network in clear text; set admin.tls_ca_file (the API's certificate or its CA)"
        ));
    }
    let work = async {
        let unreachable =
            |e: &dyn std::fmt::Display| format!("cannot reach the admin API at {admin}: {e}");
        let tcp = tokio::net::TcpStream::connect(admin.addr)
            .await
            .map_err(|e| unreachable(&e))?;
        let io: Box<dyn Io> = match &admin.tls_ca_file {
            None => Box::new(tcp),
            Some(ca) => {
                let config = crate::admin::tls::client_config(ca)?;
                let name = rustls::pki_types::ServerName::IpAddress(admin.addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(&format!("TLS: {e}")))?;
                Box::new(tls)
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
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

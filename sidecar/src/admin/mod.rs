//! The admin HTTP API (axum): `GET /status` (JSON), `GET /metrics` (Prometheus text),
//! `GET /healthz`; `POST /pause`, `/resume`, `/ack` and `/switchover` need the admin
//! token (`Authorization: Bearer <token>`). It listens on localhost unless configured
//! otherwise.
//!
//! `POST /switchover` takes `{"to": <node id>, "dry_run": <bool>}`: it checks the
//! switchover against this sidecar's view and answers 409 with the reason when it may
//! not start, 200 with the plan for a dry run, 202 with the plan when it was handed
//! to the engine (which commits it; the journal shows how it ended).

pub mod client;
pub mod tls;

use crate::adapters::telemetry::Telemetry;
use crate::adapters::throttle::{with_held_back, Throttle};
use crate::config::Secret;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use multiaz_engine::{plan_switchover, ClusterSpec, NodeId, OperatorRequest, SwitchoverPlan};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

/// What the admin listener grants a connection. Its callers are the local CLI and a
/// metrics scraper: a few connections, each done in well under a second.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// From one address at most, so that one caller cannot take every slot.
    pub per_address: usize,
    /// Kept for this host's own callers (the operator commands, `multiaz check`):
    /// connections from loopback beyond `max_connections`, so that callers from the
    /// network cannot shut the operator out.
    pub loopback_reserve: usize,
    /// A request's headers must have arrived within this.
    pub header_read: Duration,
    /// A connection is closed this long after it opened, whatever it is doing (a body
    /// sent slowly, keep-alive kept idle).
    pub connection: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 32,
            per_address: 8,
            loopback_reserve: 8,
            header_read: Duration::from_secs(5),
            connection: Duration::from_secs(30),
        }
    }
}

/// One connection counted against its address until dropped.
struct PerAddress {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, most: usize) -> Option<Self> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// The longest a TLS handshake may take.
const TLS_HANDSHAKE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` within `limits`, over TLS with `tls` (axum's own `serve`
/// has no header timeout and no cap: half-sent requests stayed open indefinitely).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.loopback_reserve));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut gate = Throttle::new();
    let mut warn = |what: String| {
        if let Some(n) = gate.pass() {
            tracing::warn!("{}", with_held_back(what, n));
        }
    };
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: retrying at once would spin.
                warn(format!("admin listener: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = addr.ip().to_canonical().is_loopback();
        // The shared slots first, then (from loopback) the reserved ones.
        let Some(permit) = open.clone().try_acquire_owned().ok().or_else(|| {
            local
                .then(|| reserve.clone().try_acquire_owned().ok())
                .flatten()
        }) else {
            warn(format!(
                "admin connection from {addr} closed: {} open already",
                limits.max_connections + if local { limits.loopback_reserve } else { 0 }
            ));
            continue;
        };
        let Some(from_here) = PerAddress::take(&per_address, addr.ip(), limits.per_address) else {
            warn(format!(
                "admin connection from {addr} closed: {} open from that address already",
                limits.per_address
            ));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = (permit, from_here);
            let work = async {
                let builder = {
                    let mut b = hyper::server::conn::http1::Builder::new();
                    b.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_read);
                    b
                };
                match acceptor {
                    None => {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = builder.serve_connection(io, service).await;
                    }
                    Some(acceptor) => {
                        // A handshake takes milliseconds; a slow one holds a slot.
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let _ = builder.serve_connection(io, service).await;
                    }
                }
            };
            let _ = tokio::time::timeout(limits.connection, work).await;
        });
    }
}

#[derive(Clone)]
struct AdminState {
    spec: ClusterSpec,
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
    spec: ClusterSpec,
    telemetry: Telemetry,
    operator: mpsc::UnboundedSender<OperatorRequest>,
    token: Option<Secret>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/primary", get(primary))
        .route("/replica", get(replica))
        .route("/metrics", get(metrics))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/ack", post(ack))
        .route("/switchover", post(switchover))
        .with_state(AdminState {
            spec,
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

/// For proxies and load balancers: 200 only on the master of record holding its lease
/// with its mysqld writable; 503 with the reason otherwise.
async fn primary(State(s): State<AdminState>) -> Response {
    health(&s, |status| status.primary())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaQuery {
    /// Transactions the replica may be behind the master.
    max_lag: Option<u64>,
}

/// For proxies and load balancers: 200 on a replica fit for reads, at most `max_lag`
/// transactions behind when given; 503 with the reason otherwise.
async fn replica(State(s): State<AdminState>, Query(q): Query<ReplicaQuery>) -> Response {
    health(&s, |status| status.replica(q.max_lag))
}

fn health(
    s: &AdminState,
    judge: impl FnOnce(&multiaz_engine::EngineStatus) -> Result<(), String>,
) -> Response {
    match s.telemetry.status().map(|status| judge(&status)) {
        Some(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Some(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "engine not started yet\n").into_response(),
    }
}

async fn status(State(s): State<AdminState>) -> Response {
    match s.telemetry.status() {
        Some(status) => Json(StatusBody {
            cluster: s.spec.name.clone(),
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

async fn ack(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    operate(&s, &headers, OperatorRequest::Ack)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    pub to: NodeId,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to `POST /switchover` when it may go ahead.
#[derive(Debug, Serialize, Deserialize)]
pub struct SwitchoverAnswer {
    pub plan: serde_json::Value,
    /// The plan in words, step by step.
    pub text: String,
    pub started: bool,
}

/// A switchover request's body is a few bytes of JSON.
const MAX_BODY: usize = 4096;

async fn switchover(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // The token first: a stranger's body is never read.
    if let Err(refused) = authorize(s.token.as_ref(), &headers) {
        return refused.into_response();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a switchover request is at most {MAX_BODY} bytes\n"),
        )
            .into_response();
    };
    let req: SwitchoverRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"to\": <node id>, \"dry_run\": <bool>}}: {e}\n"),
            )
                .into_response()
        }
    };
    let Some(status) = s.telemetry.status() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine not started yet\n").into_response();
    };
    let plan: SwitchoverPlan = match plan_switchover(&s.spec, &status, req.to) {
        Ok(p) => p,
        Err(why) => {
            tracing::info!(to = %req.to, "switchover refused: {why}");
            return (StatusCode::CONFLICT, format!("refused: {why}\n")).into_response();
        }
    };
    let answer = |started| SwitchoverAnswer {
        plan: serde_json::to_value(&plan).unwrap_or_default(),
        text: plan.to_string(),
        started,
    };
    if req.dry_run {
        return Json(answer(false)).into_response();
    }
    if s.operator
        .send(OperatorRequest::Switchover { to: req.to })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine not running\n").into_response();
    }
    tracing::info!(from = %plan.from, to = %plan.to, epoch = plan.epoch, "switchover requested");
    (StatusCode::ACCEPTED, Json(answer(true))).into_response()
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
        // A stranger guessing must not flood the log.
        static GATE: Mutex<Throttle> = Mutex::new(Throttle::new());
        let held_back = GATE.lock().unwrap_or_else(|p| p.into_inner()).pass();
        if let Some(n) = held_back {
            tracing::warn!(
                "{}",
                with_held_back("admin request refused: missing or wrong token".into(), n)
            );
        }
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin token\n"))
    }
}

/// Compares the digests, so that the time taken tells nothing of where the two differ
/// or of the token's length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_io::closed_within;

    /// The example cluster's API (its engine never started), with `token`, a listener
    /// for it on loopback, and the operator channel's receiving end.
    async fn test_app(
        token: Option<Secret>,
    ) -> (
        Router,
        tokio::net::TcpListener,
        std::net::SocketAddr,
        mpsc::UnboundedReceiver<OperatorRequest>,
    ) {
        let (operator, rx) = mpsc::unbounded_channel();
        let app = router(
            multiaz_engine::ClusterSpec::from_toml(include_str!(
                "../../../engine/examples/cluster.toml"
            ))
            .unwrap(),
            Telemetry::new(),
            operator,
            token,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (app, listener, addr, rx)
    }

    #[tokio::test]
    async fn primary_and_replica_answer_from_the_engines_status() {
        use multiaz_driver::adapters::Observer;
        use multiaz_testkit::harness::{spec, Sim};
        let sim = Sim::started(spec());
        let on = |n: Option<u64>| {
            let telemetry = Telemetry::new();
            if let Some(n) = n {
                telemetry.after_step(sim.engine(NodeId(n)));
            }
            State(AdminState {
                spec: sim.spec.clone(),
                telemetry,
                operator: mpsc::unbounded_channel().0,
                token: None,
            })
        };
        let any_lag = || Query(ReplicaQuery { max_lag: None });
        assert_eq!(primary(on(Some(1))).await.status(), StatusCode::OK);
        for n in [2, 3] {
            assert_eq!(
                primary(on(Some(n))).await.status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
            assert_eq!(
                replica(on(Some(n)), any_lag()).await.status(),
                StatusCode::OK
            );
        }
        assert_eq!(
            replica(on(Some(1)), any_lag()).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Before the engine's first step: neither.
        assert_eq!(
            primary(on(None)).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            replica(on(None), any_lag()).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

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

    /// A request that announces 2 MB and sends none of it, with a wrong token: refused
    /// at once from its headers (the body was read first before, so the answer waited
    /// for bytes that never came).
    #[tokio::test]
    async fn a_wrong_token_is_refused_before_the_body_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (app, listener, addr, _operator) =
            test_app(Some(Secret::new(b"right-token".to_vec()))).await;
        tokio::spawn(serve(listener, app, AdminLimits::default(), None));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /switchover HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
              Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut answer))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let head = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }

    /// Connections that send half a request and stop: closed at the header deadline;
    /// over the cap: closed at once; and the API answers again once they are gone.
    #[tokio::test]
    async fn half_sent_requests_time_out_and_the_cap_holds() {
        use tokio::io::AsyncWriteExt;
        let (app, listener, addr, _operator) = test_app(None).await;
        let limits = AdminLimits {
            max_connections: 8,
            per_address: 100,
            loopback_reserve: 0,
            header_read: Duration::from_millis(500),
            connection: Duration::from_secs(5),
        };
        tokio::spawn(serve(listener, app, limits, None));
        let mut half = Vec::new();
        for _ in 0..8 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            half.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut ninth = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut ninth, Duration::from_millis(300)).await,
            "over the cap, closed at once"
        );
        for s in half.iter_mut() {
            assert!(
                closed_within(s, Duration::from_secs(3)).await,
                "a half-sent request outlived the header deadline"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = healthz(addr).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 "),
            "answered once the flood is gone: {answer:?}"
        );
    }

    /// What `GET /healthz` on a new connection to `addr` gets within 3 s (empty when
    /// the connection is closed unanswered).
    async fn healthz(addr: std::net::SocketAddr) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
        answer
    }

    /// A self-signed certificate for 127.0.0.1 in `dir`: (cert file, key PEM).
    fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.join("admin.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        (path, key.serialize_pem().into_bytes())
    }

    #[tokio::test]
    async fn over_tls_only_a_client_that_trusts_the_certificate_gets_an_answer() {
        use crate::admin::client::{call, AdminEndpoint};
        use axum::http::Method;
        let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert, key) = self_signed(dir.path());
        let (other, _) = self_signed(elsewhere.path());
        let (app, listener, addr, _operator) = test_app(None).await;
        let tls = crate::admin::tls::server_config(&cert, &key).unwrap();
        tokio::spawn(serve(listener, app, AdminLimits::default(), Some(tls)));
        let trusting = AdminEndpoint::new(addr, Some(cert.clone()));
        let (code, _) = call(&trusting, Method::GET, "/healthz", None)
            .await
            .unwrap();
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "answered: engine not started"
        );
        // Plain HTTP to the TLS port: no answer.
        assert!(
            call(&AdminEndpoint::plain(addr), Method::GET, "/healthz", None)
                .await
                .is_err()
        );
        // A client that trusts another certificate refuses this one.
        let e = call(
            &AdminEndpoint::new(addr, Some(other.clone())),
            Method::GET,
            "/healthz",
            None,
        )
        .await
        .unwrap_err();
        assert!(e.contains("TLS"), "{e}");
    }

    /// This host's address on its way out (no packet is sent): not loopback.
    fn own_network_address() -> std::net::IpAddr {
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        probe.connect("10.255.255.1:9").unwrap();
        let ip = probe.local_addr().unwrap().ip();
        assert!(
            !ip.is_loopback() && !ip.is_unspecified(),
            "no network address to test from: {ip}"
        );
        ip
    }

    /// Callers from the network take at most `per_address` slots each and never the
    /// loopback reserve: the operator on the host still gets in.
    #[tokio::test]
    async fn the_network_cannot_take_every_slot_from_the_operator() {
        let (app, _, _, _operator) = test_app(None).await;
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = AdminLimits {
            max_connections: 4,
            per_address: 3,
            loopback_reserve: 2,
            header_read: Duration::from_secs(10),
            connection: Duration::from_secs(10),
        };
        tokio::spawn(serve(listener, app, limits, None));
        let remote = std::net::SocketAddr::new(own_network_address(), port);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(remote).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = tokio::net::TcpStream::connect(remote).await.unwrap();
        assert!(
            closed_within(&mut fourth, Duration::from_millis(500)).await,
            "a fourth from one address"
        );
        // Loopback fills the last shared slot, then the reserve.
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(local).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Every slot taken, the reserve too: loopback is turned away now.
        let mut more = tokio::net::TcpStream::connect(local).await.unwrap();
        assert!(closed_within(&mut more, Duration::from_millis(500)).await);
        // With one reserved connection let go, the operator gets an answer.
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = healthz(local).await;
        assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
    }
}

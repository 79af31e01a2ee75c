//! The EC2 API as the sidecars see it: a proxy in front of moto that can throttle a
//! share of the calls (`RequestLimitExceeded`, as EC2 answers when every customer
//! recovers at once) or answer every call `Unavailable` (an API outage). The run
//! switches its mode; the draw of throttled calls comes from the run's seed.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Pass,
    /// This share of calls (0..=1) is throttled.
    Throttle(f64),
    Outage,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub forwarded: u64,
    pub throttled: u64,
    pub refused: u64,
}

struct Shared {
    mode: Mode,
    rng: StdRng,
    counts: Counts,
}

#[derive(Clone)]
pub struct ApiProxy {
    shared: Arc<Mutex<Shared>>,
    pub port: u16,
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Mutex<Shared>>,
    upstream: u16,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
}

impl ApiProxy {
    /// Listens on every address of this machine (the hosts reach it through the
    /// network's gateway) and forwards to moto on `127.0.0.1:upstream`.
    pub async fn start(upstream: u16, seed: u64) -> anyhow::Result<ApiProxy> {
        let shared = Arc::new(Mutex::new(Shared {
            mode: Mode::Pass,
            rng: StdRng::seed_from_u64(seed),
            counts: Counts::default(),
        }));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
        let port = listener.local_addr()?.port();
        let ctx = Ctx {
            shared: shared.clone(),
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let app = Router::new().fallback(handle).with_state(ctx);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ApiProxy { shared, port })
    }

    pub fn set(&self, mode: Mode) {
        self.shared.lock().expect("proxy state").mode = mode;
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().expect("proxy state").counts
    }
}

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>multiaz-chaos</RequestID></Response>"
    );
    (status, [("content-type", "text/xml")], body).into_response()
}

async fn handle(State(ctx): State<Ctx>, mut req: Request) -> Response {
    let verdict = {
        let mut s = ctx.shared.lock().expect("proxy state");
        let mode = s.mode;
        let v = match mode {
            Mode::Pass => Mode::Pass,
            Mode::Throttle(share) if s.rng.random_bool(share.clamp(0.0, 1.0)) => mode,
            Mode::Throttle(_) => Mode::Pass,
            Mode::Outage => Mode::Outage,
        };
        match v {
            Mode::Pass => s.counts.forwarded += 1,
            Mode::Throttle(_) => s.counts.throttled += 1,
            Mode::Outage => s.counts.refused += 1,
        }
        v
    };
    match verdict {
        Mode::Throttle(_) => {
            return ec2_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "RequestLimitExceeded",
                "Request limit exceeded.",
            )
        }
        Mode::Outage => {
            return ec2_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The service is unavailable. Please try again shortly.",
            )
        }
        Mode::Pass => {}
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = match format!("http://127.0.0.1:{}{path}", ctx.upstream).parse() {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    *req.uri_mut() = uri;
    match ctx.client.request(req).await {
        Ok(resp) => resp.map(Body::new).into_response(),
        Err(e) => ec2_error(StatusCode::BAD_GATEWAY, "InternalError", &e.to_string()),
    }
}

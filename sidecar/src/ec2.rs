//! The EC2 adapter on aws-sdk-ec2: the VIP route, fencing by StopInstances, and what
//! `multiaz check` reads (route targets, source/destination check).
//!
//! The SDK's own retries are off: throttling is retried here, with backoff and jitter
//! under one deadline ([`crate::retry`]), so a failover knows how long a call may take.
//! Any other error is returned at once with its EC2 code.

use crate::adapters::RouteOps;
use crate::retry::{with_backoff, Attempt, Backoff};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::Client;
use multiaz_engine::NodeId;
use rand::Rng;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// EC2 error codes that mean "slow down" or "try again": retried until the deadline.
const TRANSIENT: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// Counts API errors by code, for the metrics.
pub type ErrorSink = Rc<dyn Fn(&str)>;

#[derive(Clone)]
pub struct Ec2Routes {
    inner: Rc<Inner>,
}

struct Inner {
    client: Client,
    /// The VIP as a /32 destination.
    destination: String,
    enis: BTreeMap<NodeId, String>,
    instances: BTreeMap<NodeId, String>,
    backoff: Backoff,
    on_error: ErrorSink,
}

/// Builds a client from the default credential chain (environment, profile, IMDSv2),
/// or against an emulator when `endpoint_url` is given. Retries and attempt timeouts
/// are set here so that a hung connection is a retryable failure, not a hang.
pub async fn client(region: &str, endpoint_url: Option<&str>, attempt_timeout: Duration) -> Client {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// One failed call, as `Code: message`; `transient` when worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub transient: bool,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Classifies an SDK error: service errors by code, anything on the way (timeouts,
/// connection failures, garbled responses) as transient.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> ApiError {
    match e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown").to_string();
            ApiError {
                transient: TRANSIENT.contains(&code.as_str()),
                message: s.err().message().unwrap_or("").to_string(),
                code,
            }
        }
        SdkError::ConstructionFailure(_) => ApiError {
            code: "ConstructionFailure".into(),
            message: format!("{e:?}"),
            transient: false,
        },
        SdkError::TimeoutError(_) => ApiError {
            code: "Timeout".into(),
            message: "no answer from the EC2 API".into(),
            transient: true,
        },
        SdkError::DispatchFailure(d) => ApiError {
            code: "DispatchFailure".into(),
            message: format!("{d:?}"),
            transient: true,
        },
        _ => ApiError {
            code: "ResponseError".into(),
            message: format!("{e:?}"),
            transient: true,
        },
    }
}

impl Ec2Routes {
    pub fn new(
        client: Client,
        vip: std::net::Ipv4Addr,
        enis: BTreeMap<NodeId, String>,
        instances: BTreeMap<NodeId, String>,
        backoff: Backoff,
        on_error: ErrorSink,
    ) -> Self {
        Ec2Routes {
            inner: Rc::new(Inner {
                client,
                destination: format!("{vip}/32"),
                enis,
                instances,
                backoff,
                on_error,
            }),
        }
    }

    pub fn destination(&self) -> &str {
        &self.inner.destination
    }

    fn attempt<T>(&self, r: Result<T, ApiError>) -> Attempt<T> {
        match r {
            Ok(v) => Attempt::Ok(v),
            Err(e) => {
                (self.inner.on_error)(&e.code);
                if e.transient {
                    Attempt::Retry(e.to_string())
                } else {
                    Attempt::Fail(e.to_string())
                }
            }
        }
    }

    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        with_backoff(
            &self.inner.backoff,
            |ceiling| {
                let ms = ceiling.as_millis() as u64;
                Duration::from_millis(rand::rng().random_range(0..=ms))
            },
            call,
        )
        .await
    }

    /// Where the VIP route of each table points now (`None`: no VIP route in it).
    pub async fn route_targets(
        &self,
        route_tables: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, String> {
        let mut out = BTreeMap::new();
        for rt in route_tables {
            let target = self
                .retrying(|| async { self.attempt(self.vip_target(rt).await) })
                .await
                .map_err(|e| format!("route table {rt}: {e}"))?;
            out.insert(rt.clone(), target);
        }
        Ok(out)
    }

    async fn vip_target(&self, route_table: &str) -> Result<Option<String>, ApiError> {
        let out = self
            .inner
            .client
            .describe_route_tables()
            .route_table_ids(route_table)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let Some(table) = out.route_tables().first() else {
            return Err(ApiError {
                code: "InvalidRouteTableID.NotFound".into(),
                message: format!("route table {route_table} does not exist"),
                transient: false,
            });
        };
        Ok(table
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(self.inner.destination.as_str()))
            .map(|r| r.network_interface_id().unwrap_or("").to_string()))
    }

    /// Points the VIP route at `eni`: ReplaceRoute (CreateRoute when the table has no
    /// VIP route yet), then DescribeRouteTables to see it took.
    async fn point(&self, route_table: &str, eni: &str) -> Result<(), ApiError> {
        let c = &self.inner.client;
        let replaced = c
            .replace_route()
            .route_table_id(route_table)
            .destination_cidr_block(&self.inner.destination)
            .network_interface_id(eni)
            .send()
            .await;
        if let Err(e) = replaced {
            let e = classify(&e);
            let no_route = e.code == "InvalidRoute.NotFound"
                || (e.code == "InvalidParameterValue" && e.message.contains("no route"));
            if !no_route {
                return Err(e);
            }
            c.create_route()
                .route_table_id(route_table)
                .destination_cidr_block(&self.inner.destination)
                .network_interface_id(eni)
                .send()
                .await
                .map_err(|e| classify(&e))?;
        }
        match self.vip_target(route_table).await? {
            Some(now) if now == eni => Ok(()),
            other => Err(ApiError {
                code: "NotYetVisible".into(),
                message: format!("the VIP route points at {other:?}, not {eni}"),
                transient: true,
            }),
        }
    }

    /// Source/destination check of an instance (must be off for the VIP to route).
    pub async fn source_dest_check(&self, instance: &str) -> Result<bool, String> {
        self.retrying(|| async {
            let r = self
                .inner
                .client
                .describe_instance_attribute()
                .instance_id(instance)
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::SourceDestCheck)
                .send()
                .await
                .map_err(|e| classify(&e))
                .map(|o| {
                    o.source_dest_check()
                        .and_then(|b| b.value())
                        .unwrap_or(true)
                });
            self.attempt(r)
        })
        .await
        .map_err(|e| format!("instance {instance}: {e}"))
    }
}

impl RouteOps for Ec2Routes {
    async fn replace_route(&self, route_table: String, target: NodeId) -> Result<(), String> {
        let Some(eni) = self.inner.enis.get(&target).cloned() else {
            return Err(format!("node {target} has no network interface configured"));
        };
        self.retrying(|| async { self.attempt(self.point(&route_table, &eni).await) })
            .await
            .map_err(|e| format!("route table {route_table}: {e}"))
    }

    async fn stop_instance(&self, node: NodeId) -> Result<(), String> {
        let Some(instance) = self.inner.instances.get(&node).cloned() else {
            return Err(format!("node {node} has no instance id configured"));
        };
        self.retrying(|| async {
            let r = self
                .inner
                .client
                .stop_instances()
                .instance_ids(&instance)
                .force(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e));
            self.attempt(r)
        })
        .await
        .map_err(|e| format!("instance {instance}: {e}"))
    }
}

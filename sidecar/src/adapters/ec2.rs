//! The EC2 adapter on aws-sdk-ec2: one attempt per call ([`SdkEc2`]); the retry and
//! confirm logic it runs under is [`crate::vip_routes`], shared with the simulation.
//!
//! The SDK's own retries are off: throttling is retried there, with backoff and jitter
//! under one deadline ([`crate::retry`]), so a failover knows how long a call may take.
//! Any other error is returned at once with its EC2 code.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::Client;
use multiaz_driver::vip_routes::{ApiError, Ec2Api, VipRoutes};
use std::time::Duration;

pub use multiaz_driver::vip_routes::ErrorSink;

/// The VIP routes over the real EC2 API.
pub type Ec2Routes = VipRoutes<SdkEc2>;

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

/// Classifies an SDK error: service errors by code, anything on the way (timeouts,
/// connection failures, garbled responses) as transient.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> ApiError {
    match e {
        SdkError::ServiceError(s) => ApiError::service(
            s.err().code().unwrap_or("Unknown"),
            s.err().message().unwrap_or(""),
        ),
        SdkError::ConstructionFailure(_) => ApiError {
            code: "ConstructionFailure".into(),
            message: format!("{e:?}"),
            transient: false,
        },
        SdkError::TimeoutError(_) => ApiError::timeout(),
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

/// One attempt per call on an aws-sdk-ec2 client.
pub struct SdkEc2(pub Client);

impl Ec2Api for SdkEc2 {
    async fn route_target(
        &self,
        route_table: &str,
        destination: &str,
    ) -> Result<Option<String>, ApiError> {
        let out = self
            .0
            .describe_route_tables()
            .route_table_ids(route_table)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let Some(table) = out.route_tables().first() else {
            return Err(ApiError::service(
                "InvalidRouteTableID.NotFound",
                format!("route table {route_table} does not exist"),
            ));
        };
        Ok(table
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(destination))
            .map(|r| r.network_interface_id().unwrap_or("").to_string()))
    }

    async fn replace_route(
        &self,
        route_table: &str,
        destination: &str,
        eni: &str,
    ) -> Result<(), ApiError> {
        self.0
            .replace_route()
            .route_table_id(route_table)
            .destination_cidr_block(destination)
            .network_interface_id(eni)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn create_route(
        &self,
        route_table: &str,
        destination: &str,
        eni: &str,
    ) -> Result<(), ApiError> {
        self.0
            .create_route()
            .route_table_id(route_table)
            .destination_cidr_block(destination)
            .network_interface_id(eni)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn stop_instance(&self, instance: &str) -> Result<(), ApiError> {
        self.0
            .stop_instances()
            .instance_ids(instance)
            .force(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn source_dest_check(&self, instance: &str) -> Result<bool, ApiError> {
        self.0
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
            })
    }
}

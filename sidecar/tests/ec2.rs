//! The EC2 adapter against aws-smithy-mocks: throttling is retried, a permanent error
//! is returned at once with its code, a missing route table is named, a stale read is
//! read again rather than written again (until REWRITE_AFTER), a missing VIP route is
//! created.

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_route::CreateRouteOutput;
use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput;
use aws_sdk_ec2::operation::replace_route::{ReplaceRouteError, ReplaceRouteOutput};
use aws_sdk_ec2::types::{Route, RouteTable};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use multiaz_driver::retry::Backoff;
use multiaz_driver::vip_routes::{random_jitter, Jitter, REWRITE_AFTER};
use multiaz_driver::RouteOps;
use multiaz_engine::NodeId;
use multiaz_sidecar::adapters::ec2::{Ec2Routes, SdkEc2};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ENI_B: &str = "eni-0bbbbbbbbbbbbbbb2";

fn error(code: &str, message: &str) -> ReplaceRouteError {
    ReplaceRouteError::generic(ErrorMetadata::builder().code(code).message(message).build())
}

fn table(eni: &'static str) -> DescribeRouteTablesOutput {
    DescribeRouteTablesOutput::builder()
        .route_tables(
            RouteTable::builder()
                .route_table_id("rtb-0a1")
                .routes(
                    Route::builder()
                        .destination_cidr_block("10.0.100.10/32")
                        .network_interface_id(eni)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn table_pointing_at(eni: &'static str) -> Rule {
    mock!(Client::describe_route_tables).then_output(move || table(eni))
}

/// A mocked client configured as the real one is: the SDK's own retries off, so the
/// adapter's backoff is the only one.
macro_rules! client {
    ($($rule:expr),*) => {
        mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [$($rule),*], |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled()))
    };
}

fn adapter(client: Client, errors: Rc<RefCell<Vec<String>>>) -> Ec2Routes {
    adapter_with(client, errors, random_jitter())
}

fn adapter_with(client: Client, errors: Rc<RefCell<Vec<String>>>, jitter: Jitter) -> Ec2Routes {
    Ec2Routes::new(
        SdkEc2(client),
        "10.0.100.10".parse().unwrap(),
        BTreeMap::from([(NodeId(2), ENI_B.to_string())]),
        BTreeMap::from([(NodeId(2), "i-0b".to_string())]),
        Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(50),
            deadline: Duration::from_secs(5),
        },
        jitter,
        Rc::new(move |code: &str| errors.borrow_mut().push(code.to_string())),
    )
}

#[tokio::test]
async fn throttled_twice_then_success() {
    let replace = mock!(Client::replace_route)
        .sequence()
        .error(|| error("RequestLimitExceeded", "Request limit exceeded."))
        .times(2)
        .output(|| ReplaceRouteOutput::builder().build())
        .build();
    let describe = table_pointing_at(ENI_B);
    let client = client!(&replace, &describe);
    let errors = Rc::new(RefCell::new(Vec::new()));
    let r = adapter(client, errors.clone())
        .replace_route("rtb-0a1".into(), NodeId(2))
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        replace.num_calls(),
        3,
        "two throttled attempts, then success"
    );
    assert_eq!(describe.num_calls(), 1, "the result is verified");
    assert_eq!(*errors.borrow(), vec!["RequestLimitExceeded"; 2]);
}

#[tokio::test]
async fn a_permanent_error_is_surfaced_with_its_code() {
    let replace = mock!(Client::replace_route).then_error(|| {
        error(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        )
    });
    let client = client!(&replace);
    let errors = Rc::new(RefCell::new(Vec::new()));
    let e = adapter(client, errors.clone())
        .replace_route("rtb-0a1".into(), NodeId(2))
        .await
        .unwrap_err();
    assert!(
        e.contains("UnauthorizedOperation") && e.contains("rtb-0a1"),
        "{e}"
    );
    assert_eq!(replace.num_calls(), 1, "not retried");
    assert_eq!(*errors.borrow(), vec!["UnauthorizedOperation"]);
}

#[tokio::test]
async fn a_missing_route_table_is_named() {
    let replace = mock!(Client::replace_route).then_error(|| {
        error(
            "InvalidRouteTableID.NotFound",
            "The routeTable ID 'rtb-missing' does not exist",
        )
    });
    let describe = mock!(Client::describe_route_tables)
        .then_output(|| DescribeRouteTablesOutput::builder().build());
    let client = client!(&replace, &describe);
    let routes = adapter(client, Rc::new(RefCell::new(Vec::new())));
    let e = routes
        .replace_route("rtb-missing".into(), NodeId(2))
        .await
        .unwrap_err();
    assert!(
        e.contains("rtb-missing") && e.contains("InvalidRouteTableID.NotFound"),
        "{e}"
    );
    // `multiaz check` reads the table and names it too.
    let e = routes
        .route_targets(&["rtb-missing".to_string()])
        .await
        .unwrap_err();
    assert!(e.contains("rtb-missing"), "{e}");
}

#[tokio::test]
async fn a_stale_read_after_the_write_is_read_again_not_written_again() {
    // Eventual consistency: the read after ReplaceRoute still shows the old target.
    let replace =
        mock!(Client::replace_route).then_output(|| ReplaceRouteOutput::builder().build());
    let describe = mock!(Client::describe_route_tables)
        .sequence()
        .output(|| table("eni-old"))
        .times(2)
        .output(|| table(ENI_B))
        .build();
    let client = client!(&replace, &describe);
    let r = adapter(client, Rc::new(RefCell::new(Vec::new())))
        .replace_route("rtb-0a1".into(), NodeId(2))
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(replace.num_calls(), 1, "the mutating bucket is spent once");
    assert_eq!(describe.num_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_route_that_does_not_take_is_written_again_after_a_while() {
    // Overwritten or lost after the write: still the old target 70 reads later (about
    // 3.3 s at this backoff), so the write is made again once REWRITE_AFTER (3 s) has
    // passed since the first, and only then.
    let started = tokio::time::Instant::now();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let replace = mock!(Client::replace_route).then_output(move || {
        seen.lock().unwrap().push(started.elapsed());
        ReplaceRouteOutput::builder().build()
    });
    let describe = mock!(Client::describe_route_tables)
        .sequence()
        .output(|| table("eni-old"))
        .times(70)
        .output(|| table(ENI_B))
        .build();
    let client = client!(&replace, &describe);
    let r = adapter_with(client, Rc::new(RefCell::new(Vec::new())), Rc::new(|c| c))
        .replace_route("rtb-0a1".into(), NodeId(2))
        .await;
    assert_eq!(r, Ok(()));
    let writes = writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 2, "written once, then once again: {writes:?}");
    assert!(writes[1] - writes[0] >= REWRITE_AFTER, "{writes:?}");
}

#[tokio::test]
async fn a_table_without_the_vip_route_gets_one_created() {
    let replace = mock!(Client::replace_route).then_error(|| {
        error(
            "InvalidRoute.NotFound",
            "no route with destination-cidr-block 10.0.100.10/32 in route table rtb-0a1",
        )
    });
    let create = mock!(Client::create_route).then_output(|| CreateRouteOutput::builder().build());
    let describe = table_pointing_at(ENI_B);
    let client = client!(&replace, &create, &describe);
    let r = adapter(client, Rc::new(RefCell::new(Vec::new())))
        .replace_route("rtb-0a1".into(), NodeId(2))
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!((replace.num_calls(), create.num_calls()), (1, 1));
}

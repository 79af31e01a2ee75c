//! Moving the VIP route and fencing by StopInstances, over any EC2 API: the retry,
//! confirm and error classification that the real adapter (the sidecar's `ec2.rs`, on
//! aws-sdk-ec2) and the simulation's model EC2 run alike, so the simulation tests this
//! code and not a copy of it.
//!
//! The API is eventually consistent (a Describe may show the old target for a while
//! after ReplaceRoute answered: docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html)
//! and an applied call may time out (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html:
//! ReplaceRoute takes no client token). So a route is read after it is written, and a
//! retry reads before it writes. A route not yet seen pointing at us is read again,
//! not written again, for [`REWRITE_AFTER`]: reads
//! spend the non-mutating token bucket (100 tokens, 20/s) rather than the mutating one
//! (50, 5/s) that every cluster in the account draws on when an AZ fails
//! (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). After that, the
//! write is taken as lost (overwritten by a stale caller) and made again.

use crate::adapters::RouteOps;
use crate::retry::{with_backoff, Attempt, Backoff};
use multiaz_engine::NodeId;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one EC2 call may take before it counts as failed (`ec2.attempt_timeout_ms`
/// by default; the simulation's model API is bounded by it too).
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 5_000;

/// EC2 error codes that mean "slow down" or "try again": retried until the deadline.
pub const TRANSIENT: &[&str] = &[
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

/// One failed call, as `Code: message`; `transient` when worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub transient: bool,
}

impl ApiError {
    /// An error answered by the service: transient when its code is in [`TRANSIENT`].
    pub fn service(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            transient: TRANSIENT.contains(&code),
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The call may have been applied although it failed (no answer in time).
    pub fn ambiguous(&self) -> bool {
        self.code == "Timeout" || self.code == "ResponseError"
    }

    /// A write with this outcome may have taken effect: it succeeded, or its answer
    /// was lost.
    pub fn maybe_applied<T>(outcome: &Result<T, ApiError>) -> bool {
        outcome.as_ref().map_or_else(ApiError::ambiguous, |_| true)
    }

    /// No answer within the attempt's bound: the call may or may not have been applied.
    pub fn timeout() -> Self {
        ApiError {
            code: "Timeout".into(),
            message: "no answer from the EC2 API".into(),
            transient: true,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The EC2 calls this module makes, one attempt each, without retries.
pub trait Ec2Api: 'static {
    /// The target (network interface) of the route to `destination` in the table;
    /// `None` when the table has no such route.
    fn route_target(
        &self,
        route_table: &str,
        destination: &str,
    ) -> impl Future<Output = Result<Option<String>, ApiError>>;
    fn replace_route(
        &self,
        route_table: &str,
        destination: &str,
        eni: &str,
    ) -> impl Future<Output = Result<(), ApiError>>;
    fn create_route(
        &self,
        route_table: &str,
        destination: &str,
        eni: &str,
    ) -> impl Future<Output = Result<(), ApiError>>;
    fn stop_instance(&self, instance: &str) -> impl Future<Output = Result<(), ApiError>>;
    fn source_dest_check(&self, instance: &str) -> impl Future<Output = Result<bool, ApiError>>;
}

/// How long a write may stay invisible to reads before it is made again.
pub const REWRITE_AFTER: Duration = Duration::from_secs(3);

/// Counts API errors by code, for the metrics.
pub type ErrorSink = Rc<dyn Fn(&str)>;

/// Maps a backoff ceiling to a wait in `[0, ceiling]`: random in the sidecar, from the
/// seed in the simulation.
pub type Jitter = Rc<dyn Fn(Duration) -> Duration>;

/// Full jitter from the thread's random generator.
pub fn random_jitter() -> Jitter {
    Rc::new(|ceiling: Duration| {
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    })
}

pub struct VipRoutes<A> {
    inner: Rc<Inner<A>>,
}

impl<A> Clone for VipRoutes<A> {
    fn clone(&self) -> Self {
        VipRoutes {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<A> {
    api: A,
    /// The VIP as a /32 destination.
    destination: String,
    enis: BTreeMap<NodeId, String>,
    instances: BTreeMap<NodeId, String>,
    backoff: Backoff,
    jitter: Jitter,
    on_error: ErrorSink,
    /// Per route table, the number of the newest `replace_route` call: an older one
    /// still retrying stops before its next attempt (the engine moved on to another
    /// target, and a late write of the old one would undo it).
    newest: RefCell<BTreeMap<String, u64>>,
}

impl<A: Ec2Api> VipRoutes<A> {
    pub fn new(
        api: A,
        vip: std::net::Ipv4Addr,
        enis: BTreeMap<NodeId, String>,
        instances: BTreeMap<NodeId, String>,
        backoff: Backoff,
        jitter: Jitter,
        on_error: ErrorSink,
    ) -> Self {
        VipRoutes {
            inner: Rc::new(Inner {
                api,
                destination: format!("{vip}/32"),
                enis,
                instances,
                backoff,
                jitter,
                on_error,
                newest: RefCell::new(BTreeMap::new()),
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
                // A route not yet seen pointing at its target, or a call given up for
                // a newer one, is no API error.
                if e.code != NOT_YET_VISIBLE && e.code != SUPERSEDED {
                    (self.inner.on_error)(&e.code);
                }
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
        Fut: Future<Output = Attempt<T>>,
    {
        with_backoff(&self.inner.backoff, |c| (self.inner.jitter)(c), call).await
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
        self.inner
            .api
            .route_target(route_table, &self.inner.destination)
            .await
    }

    /// One attempt to point the VIP route at `eni`. The first writes at once (the
    /// failover's clients wait for it); a later one reads first and is done if the
    /// route already points there (an earlier write took, its answer lost or its read
    /// stale), and writes again only once [`REWRITE_AFTER`] has passed since this call
    /// last wrote. A write is ReplaceRoute, or CreateRoute when the table has no VIP
    /// route yet, followed by a read to see it took.
    async fn point(
        &self,
        route_table: &str,
        eni: &str,
        written: &Cell<Option<Instant>>,
        superseded: &dyn Fn() -> bool,
    ) -> Result<(), ApiError> {
        if let Some(at) = written.get() {
            let seen = self.vip_target(route_table).await?;
            if seen.as_deref() == Some(eni) {
                return Ok(());
            }
            if at.elapsed() < REWRITE_AFTER {
                return Err(not_yet(eni, seen));
            }
        }
        // Looked at again right before the write: a newer call may have come while this
        // one read, and an older write landing after it would undo it.
        if superseded() {
            return Err(superseded_error());
        }
        let wrote = self.write(route_table, eni).await;
        // A write that timed out may have been applied (ReplaceRoute takes no client
        // token): the next attempt reads before it writes again, as after a success.
        if ApiError::maybe_applied(&wrote) {
            written.set(Some(Instant::now()));
        }
        wrote?;
        match self.vip_target(route_table).await? {
            Some(now) if now == eni => Ok(()),
            now => Err(not_yet(eni, now)),
        }
    }

    /// ReplaceRoute, or CreateRoute when the table has no route to the VIP.
    async fn write(&self, route_table: &str, eni: &str) -> Result<(), ApiError> {
        let (api, destination) = (&self.inner.api, self.inner.destination.as_str());
        match api.replace_route(route_table, destination, eni).await {
            Err(e)
                if e.code == "InvalidRoute.NotFound"
                    || (e.code == "InvalidParameterValue" && e.message.contains("no route")) =>
            {
                api.create_route(route_table, destination, eni).await
            }
            r => r,
        }
    }

    /// Source/destination check of an instance (must be off for the VIP to route).
    pub async fn source_dest_check(&self, instance: &str) -> Result<bool, String> {
        self.retrying(|| async { self.attempt(self.inner.api.source_dest_check(instance).await) })
            .await
            .map_err(|e| format!("instance {instance}: {e}"))
    }
}

const NOT_YET_VISIBLE: &str = "NotYetVisible";
const SUPERSEDED: &str = "Superseded";

fn superseded_error() -> ApiError {
    ApiError {
        code: SUPERSEDED.into(),
        message: "superseded by a newer change of this route".into(),
        transient: false,
    }
}

fn not_yet(eni: &str, seen: Option<String>) -> ApiError {
    ApiError {
        code: NOT_YET_VISIBLE.into(),
        message: format!("the VIP route points at {seen:?}, not {eni}"),
        transient: true,
    }
}

impl<A: Ec2Api> RouteOps for VipRoutes<A> {
    async fn replace_route(&self, route_table: String, target: NodeId) -> Result<(), String> {
        let Some(eni) = self.inner.enis.get(&target).cloned() else {
            return Err(format!("node {target} has no network interface configured"));
        };
        let call = {
            let mut newest = self.inner.newest.borrow_mut();
            let n = newest.entry(route_table.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let superseded = || self.inner.newest.borrow().get(&route_table) != Some(&call);
        let written = Cell::new(None);
        self.retrying(|| async {
            if superseded() {
                return self.attempt::<()>(Err(superseded_error()));
            }
            self.attempt(self.point(&route_table, &eni, &written, &superseded).await)
        })
        .await
        .map_err(|e| format!("route table {route_table}: {e}"))
    }

    async fn stop_instance(&self, node: NodeId) -> Result<(), String> {
        let Some(instance) = self.inner.instances.get(&node).cloned() else {
            return Err(format!("node {node} has no instance id configured"));
        };
        self.retrying(|| async { self.attempt(self.inner.api.stop_instance(&instance).await) })
            .await
            .map_err(|e| format!("instance {instance}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One route table; each write's outcome from a script, then success.
    #[derive(Default)]
    struct FakeApi {
        target: RefCell<Option<String>>,
        writes: RefCell<Vec<Result<(), ApiError>>>,
        calls: RefCell<Vec<&'static str>>,
    }

    impl Ec2Api for Rc<FakeApi> {
        async fn route_target(&self, _: &str, _: &str) -> Result<Option<String>, ApiError> {
            self.calls.borrow_mut().push("describe");
            Ok(self.target.borrow().clone())
        }
        async fn replace_route(&self, _: &str, _: &str, eni: &str) -> Result<(), ApiError> {
            self.calls.borrow_mut().push("replace");
            let mut script = self.writes.borrow_mut();
            let r = if script.is_empty() {
                Ok(())
            } else {
                script.remove(0)
            };
            if ApiError::maybe_applied(&r) {
                *self.target.borrow_mut() = Some(eni.to_string());
            }
            r
        }
        async fn create_route(&self, a: &str, b: &str, eni: &str) -> Result<(), ApiError> {
            self.replace_route(a, b, eni).await
        }
        async fn stop_instance(&self, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
        async fn source_dest_check(&self, _: &str) -> Result<bool, ApiError> {
            Ok(false)
        }
    }

    fn routes(api: Rc<FakeApi>, errors: Rc<RefCell<Vec<String>>>) -> VipRoutes<Rc<FakeApi>> {
        VipRoutes::new(
            api,
            "10.0.100.10".parse().unwrap(),
            BTreeMap::from([(NodeId(2), "eni-b".to_string())]),
            BTreeMap::new(),
            Backoff {
                first: Duration::from_millis(10),
                max: Duration::from_millis(50),
                deadline: Duration::from_secs(5),
            },
            Rc::new(|c| c),
            Rc::new(move |code: &str| errors.borrow_mut().push(code.to_string())),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_whose_answer_was_lost_is_read_before_it_is_written_again() {
        let api = Rc::new(FakeApi::default());
        *api.target.borrow_mut() = Some("eni-a".into());
        api.writes.borrow_mut().push(Err(ApiError::timeout()));
        let errors = Rc::new(RefCell::new(Vec::new()));
        let r = routes(api.clone(), errors.clone())
            .replace_route("rtb-1".into(), NodeId(2))
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(
            *api.calls.borrow(),
            ["replace", "describe"],
            "one write only"
        );
        assert_eq!(*errors.borrow(), ["Timeout"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_write_is_made_again_at_once() {
        // Throttled means not applied: nothing to read first.
        let api = Rc::new(FakeApi::default());
        api.writes
            .borrow_mut()
            .push(Err(ApiError::service("RequestLimitExceeded", "slow down")));
        let r = routes(api.clone(), Rc::new(RefCell::new(Vec::new())))
            .replace_route("rtb-1".into(), NodeId(2))
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(*api.calls.borrow(), ["replace", "replace", "describe"]);
    }
}

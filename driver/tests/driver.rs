//! The driver against recording adapters, on paused tokio time.

use multiaz_driver::*;
use multiaz_engine::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

type Log = Rc<RefCell<Vec<String>>>;

#[derive(Clone)]
struct Fake(Log);

impl MysqlOps for Fake {
    async fn probe(&self, node: NodeId) -> ProbeResult {
        self.0.borrow_mut().push(format!("probe {node}"));
        ProbeResult::Down("nobody home".into())
    }
    async fn op(&self, node: NodeId, op: MysqlOp) -> Result<MysqlReply, String> {
        self.0.borrow_mut().push(format!("op {node} {op:?}"));
        Err("unreachable".into())
    }
}

impl Salvage for Fake {
    async fn salvage(
        &self,
        _: u64,
        _: NodeId,
        _: NodeId,
        _: GtidSet,
        _: Duration,
    ) -> Result<SalvageReport, String> {
        Err("no".into())
    }
}

impl RouteOps for Fake {
    async fn replace_route(&self, t: String, n: NodeId) -> Result<(), String> {
        self.0.borrow_mut().push(format!("route {t} {n}"));
        Ok(())
    }
    async fn stop_instance(&self, _: NodeId) -> Result<(), String> {
        Ok(())
    }
}

impl PeerTransport for Fake {
    fn send(&self, to: NodeId, message: PeerMessage) {
        let kind = match message {
            PeerMessage::Raft(_) => "raft",
            PeerMessage::Report(_) => "report",
            PeerMessage::LeaseRequest { .. } => "lease-request",
            PeerMessage::LeaseGrant { .. } => "lease-grant",
        };
        self.0.borrow_mut().push(format!("send {to} {kind}"));
    }
}

impl DurableStore for Fake {
    fn persist(&mut self, state: &DurableState) -> Result<Written, String> {
        self.0.borrow_mut().push(format!(
            "persist term {} boots {}",
            state.hard_state.term, state.boots
        ));
        Ok(Written::Now)
    }
}

impl Observer for Fake {
    fn event(&self, _: Time, _: &Event) {}
    fn wall_unix_ms(&self) -> u64 {
        0
    }
}

/// Every adapter the fake, but the store.
fn fakes<D>(store: D, f: Fake) -> Adapters<Fake, Fake, Fake, Fake, D, Fake, NoHooks, NoForward> {
    Adapters {
        mysql: f.clone(),
        salvage: f.clone(),
        routes: f.clone(),
        peers: f.clone(),
        store,
        observer: f,
        hooks: NoHooks,
        forward: NoForward,
    }
}

fn spec() -> ClusterSpec {
    ClusterSpec::from_toml(include_str!("../../engine/examples/cluster.toml")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_lone_node_probes_campaigns_and_persists_before_it_asks_for_votes() {
    let log: Log = Rc::default();
    let f = Fake(log.clone());
    let (driver, handle) = Driver::new(spec(), NodeId(2), None, fakes(f.clone(), f)).unwrap();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let _keep = handle;
            let _ = tokio::time::timeout(Duration::from_secs(5), driver.run()).await;
        })
        .await;
    let log = log.borrow();
    assert_eq!(
        log.first().map(String::as_str),
        Some("persist term 0 boots 1"),
        "the start is counted before anything is sent (lease rounds are numbered from it)"
    );
    assert!(log.iter().any(|l| l == "probe n2"), "probes its own mysqld");
    assert!(log.iter().any(|l| l == "probe n1"), "probes the master");
    assert!(
        log.iter().any(|l| l.starts_with("send n1 report")),
        "reports to its peers"
    );
    let first_raft = log
        .iter()
        .position(|l| l.ends_with(" raft"))
        .expect("campaigns");
    // After the count of starts (the first line), raft's own state.
    let first_persist = 1 + log[1..]
        .iter()
        .position(|l| l.starts_with("persist"))
        .unwrap_or_else(|| panic!("persists: {log:?}"));
    assert!(
        first_persist < first_raft,
        "votes are asked only after the term is durable: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("route")),
        "alone, it never coordinates"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_persist_stops_the_driver() {
    struct Broken;
    impl DurableStore for Broken {
        fn persist(&mut self, _: &DurableState) -> Result<Written, String> {
            Err("disk full".into())
        }
    }
    let log: Log = Rc::default();
    let f = Fake(log);
    let (driver, _handle) = Driver::new(spec(), NodeId(2), None, fakes(Broken, f)).unwrap();
    let local = tokio::task::LocalSet::new();
    let r = local
        .run_until(tokio::time::timeout(Duration::from_secs(10), driver.run()))
        .await
        .expect("stops before the timeout");
    assert!(r.unwrap_err().to_string().contains("disk full"));
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_run_and_dropped_handles_do_not() {
    let log: Log = Rc::default();
    let f = Fake(log.clone());
    let local = tokio::task::LocalSet::new();
    // Every handle dropped: the driver keeps running (it must still fence on time).
    let (driver, handle) =
        Driver::new(spec(), NodeId(2), None, fakes(f.clone(), f.clone())).unwrap();
    drop(handle);
    let r = local
        .run_until(tokio::time::timeout(Duration::from_secs(30), driver.run()))
        .await;
    assert!(r.is_err(), "still running after 30 s without handles");
    let probes = log.borrow().iter().filter(|l| *l == "probe n2").count();
    assert!(probes > 10, "and still probing: {probes} probes");
    // Stopped: it ends at once, without an error.
    let (driver, handle) = Driver::new(spec(), NodeId(2), None, fakes(f.clone(), f)).unwrap();
    let stopper = handle.clone();
    let r = local
        .run_until(async move {
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                stopper.stop();
            });
            tokio::time::timeout(Duration::from_secs(30), driver.run()).await
        })
        .await;
    assert!(matches!(r, Ok(Ok(()))), "stop ends the run with Ok");
    drop(handle);
}

/// How the test tells the driver a background write is durable.
type Answer = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A store that writes in the background: each write is durable only when the test
/// says so (every pending one at once, logged as `durable N`, N the writes so far).
#[derive(Clone)]
struct Slow {
    log: Log,
    pending: Rc<RefCell<Vec<Answer>>>,
    fail: bool,
}

impl DurableStore for Slow {
    fn persist(&mut self, _: &DurableState) -> Result<Written, String> {
        self.log.borrow_mut().push("persist".into());
        let (done, durable) = tokio::sync::oneshot::channel();
        self.pending.borrow_mut().push(done);
        Ok(Written::Later(durable))
    }
}

type SlowDriver = Driver<Fake, Fake, Fake, Fake, Slow, Fake, NoHooks, NoForward>;

/// A driver on a background store that answers `Err` to every write when `fail`; the
/// store, and the log every fake writes to.
fn slow_driver(fail: bool) -> (Log, Slow, SlowDriver, DriverHandle) {
    let log: Log = Rc::default();
    let store = Slow {
        log: log.clone(),
        pending: Rc::default(),
        fail,
    };
    let (driver, handle) = Driver::new(
        spec(),
        NodeId(2),
        None,
        fakes(store.clone(), Fake(log.clone())),
    )
    .unwrap();
    (log, store, driver, handle)
}

impl Slow {
    fn settle(&self) {
        let pending: Vec<_> = self.pending.borrow_mut().drain(..).collect();
        if pending.is_empty() {
            return;
        }
        let persists = self.log.borrow().iter().filter(|l| *l == "persist").count();
        self.log.borrow_mut().push(format!("durable {persists}"));
        for done in pending {
            let answer = match self.fail {
                true => Err("disk gone".to_string()),
                false => Ok(()),
            };
            let _ = done.send(answer);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_background_store_nothing_runs_before_the_writes_it_follows_are_durable() {
    let (log, store, driver, handle) = slow_driver(false);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let _keep = handle;
            // The disk answers every 700 ms: the driver keeps running meanwhile.
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    store.settle();
                }
            });
            let _ = tokio::time::timeout(Duration::from_secs(10), driver.run()).await;
        })
        .await;
    let log = log.borrow();
    assert_eq!(ran_early(&log), None, "{log:?}");
    let persists = log.iter().filter(|l| *l == "persist").count();
    assert!(persists >= 2, "the start and raft's own state: {log:?}");
    assert!(
        log.iter().any(|l| l.ends_with(" raft")),
        "campaigns once durable: {log:?}"
    );
    assert!(
        log.iter().filter(|l| l.starts_with("probe")).count() > 10,
        "{log:?}"
    );
    // Probes are never held: the driver goes on probing while a write is pending.
    assert!(probed_while_writing(&log), "{log:?}");
    // The control: the same check finds a send run between a write and its answer.
    let early: Vec<String> = [
        "persist",
        "durable 1",
        "persist",
        "send n1 raft",
        "durable 2",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(ran_early(&early), Some(3));
}

/// The lines of `log` that ran between a write asked for and its answer, with their
/// index.
fn while_writing(log: &[String]) -> Vec<(usize, &String)> {
    let (mut persists, mut durable) = (0, 0);
    let mut out = Vec::new();
    for (i, line) in log.iter().enumerate() {
        if line == "persist" {
            persists += 1;
        } else if let Some(n) = line.strip_prefix("durable ") {
            durable = n.parse().unwrap();
        } else if durable < persists {
            out.push((i, line));
        }
    }
    out
}

/// The first line of `log` that ran while a write asked for before it was not yet
/// durable (a probe aside: probes are never held).
fn ran_early(log: &[String]) -> Option<usize> {
    while_writing(log)
        .into_iter()
        .find(|(_, line)| !line.starts_with("probe"))
        .map(|(i, _)| i)
}

fn probed_while_writing(log: &[String]) -> bool {
    while_writing(log)
        .iter()
        .any(|(_, line)| line.starts_with("probe"))
}

#[tokio::test(start_paused = true)]
async fn a_background_write_that_fails_stops_the_driver() {
    let (log, store, driver, _handle) = slow_driver(true);
    let local = tokio::task::LocalSet::new();
    let r = local
        .run_until(async move {
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    store.settle();
                }
            });
            tokio::time::timeout(Duration::from_secs(10), driver.run()).await
        })
        .await
        .expect("stops before the timeout");
    assert!(r.unwrap_err().to_string().contains("disk gone"));
    assert!(
        !log.borrow().iter().any(|l| l.starts_with("probe")),
        "nothing ran after the start's write failed: {:?}",
        log.borrow()
    );
}

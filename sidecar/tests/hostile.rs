//! A hostile network during a real failover: 10,000 connection attempts against every
//! sidecar's peer port and admin API — idle, slow (half a frame, half a request) and
//! garbage, from a member's address (127.0.0.1) and from a stranger's (127.0.0.2) —
//! while the master's mysqld is SIGKILLed. Every sidecar stays up, the failover
//! completes within its usual bound, and no sidecar's resident memory reaches 64 MB.
//!
//! Needs what `real_cluster.rs` needs (Debian's `mariadb-server`, `moto_server`); it
//! fails, never skips, without them.

mod support;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cluster::*;
use support::*;
use tokio::io::AsyncWriteExt;

/// Connection attempts in all.
const ATTEMPTS: u64 = 10_000;
/// Held open at once by the flood (the oldest is dropped for the next).
const HELD: usize = 400;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    connected: AtomicU64,
}

/// One connection of the flood: kind `n % 3` (idle, slow, garbage) from `from`.
async fn attack(
    from: IpAddr,
    to: SocketAddr,
    n: u64,
    admin: bool,
) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut s = tokio::time::timeout(Duration::from_millis(500), socket.connect(to))
        .await
        .ok()?
        .ok()?;
    let bytes: Vec<u8> = match (n % 3, admin) {
        (0, _) => Vec::new(),
        // Slow: a frame announced one byte short of the limit, or headers never ended.
        (1, false) => [((1u32 << 20) - 1).to_be_bytes().as_slice(), b"MAZ"].concat(),
        (1, true) => b"POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: 9".to_vec(),
        // Garbage.
        _ => (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(n as u8))
            .collect(),
    };
    if !bytes.is_empty() {
        let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&bytes)).await;
    }
    Some(s)
}

fn raise_own_open_file_limit() {
    // The flood holds hundreds of sockets; the test process must be allowed them.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_connections_during_a_failover_change_nothing() {
    raise_own_open_file_limit();
    let Cluster {
        dir,
        dbs,
        ec2,
        world,
        ports,
        configs,
        mut sidecars,
        moto: _moto,
    } = Cluster::start("hostile", "").await;
    let dump_logs = || dump_sidecar_logs(&dir);
    let pids: Vec<u32> = sidecars.iter().map(|g| g.0.id()).collect();

    let targets: Vec<(SocketAddr, bool)> = ports
        .iter()
        .flat_map(|p| {
            [
                (SocketAddr::from(([127, 0, 0, 1], p.peer)), false),
                (SocketAddr::from(([127, 0, 0, 1], p.admin)), true),
            ]
        })
        .collect();
    let counts = Arc::new(Counts::default());
    let done = Arc::new(AtomicBool::new(false));
    let failed_over = Arc::new(AtomicBool::new(false));
    let flood = {
        let (counts, done, targets) = (counts.clone(), done.clone(), targets.clone());
        let failed_over = failed_over.clone();
        tokio::spawn(async move {
            let mut held: VecDeque<tokio::net::TcpStream> = VecDeque::new();
            // At least ATTEMPTS, and on until the failover is over.
            let mut n = 0u64;
            while n < ATTEMPTS || !failed_over.load(Ordering::Relaxed) {
                n += 1;
                let (to, admin) = targets[(n as usize) % targets.len()];
                // Half from a member's address, half from a stranger's.
                let from: IpAddr = if (n / 6).is_multiple_of(2) {
                    [127, 0, 0, 1].into()
                } else {
                    [127, 0, 0, 2].into()
                };
                counts.attempts.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = attack(from, to, n / 2, admin).await {
                    counts.connected.fetch_add(1, Ordering::Relaxed);
                    held.push_back(s);
                    if held.len() > HELD {
                        held.pop_front();
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            // Held until the test is done with them.
            held
        })
    };
    // Memory, sampled through the whole flood.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, pids, done) = (peak.clone(), pids.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                for p in &pids {
                    peak.fetch_max(usage(*p).rss_kib, Ordering::Relaxed);
                }
                if done.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The flood is well under way when the master dies.
    wait_until(
        "the flood to be under way",
        Duration::from_secs(30),
        || async { (counts.attempts.load(Ordering::Relaxed) >= 1_000).then_some(()) },
    )
    .await;
    let mut dbs = dbs;
    let killed_at = Instant::now();
    dbs[0].child.0.kill().expect("SIGKILL the master mysqld");
    let _ = dbs[0].child.0.wait();

    let limit = Duration::from_secs(10);
    let outcome = tokio::time::timeout(limit, failed_over_from_db1(&dbs, &ec2, &world)).await;
    let took = killed_at.elapsed();
    failed_over.store(true, Ordering::Relaxed);
    let Ok(new) = outcome else {
        dump_logs();
        panic!("no complete failover within {limit:?} of the SIGKILL under the flood");
    };
    let attempts_by_then = counts.attempts.load(Ordering::Relaxed);
    eprintln!(
        "failover to db-{} complete {took:?} after the SIGKILL, {attempts_by_then} hostile connection attempts by then",
        new + 1
    );

    let held = tokio::time::timeout(Duration::from_secs(120), flood)
        .await
        .expect("the flood ends")
        .unwrap();
    sampler.await.unwrap();
    let attempts = counts.attempts.load(Ordering::Relaxed);
    let connected = counts.connected.load(Ordering::Relaxed);
    let peak_kib = peak.load(Ordering::Relaxed);
    eprintln!(
        "flood: {attempts} attempts, {connected} connected, {} still held; sidecars' peak RSS {} KiB",
        held.len(),
        peak_kib
    );
    assert!(attempts >= ATTEMPTS, "{attempts} attempts");
    assert!(
        peak_kib > 0 && peak_kib < RSS_LIMIT_KIB,
        "a sidecar's resident memory reached {peak_kib} KiB (limit {RSS_LIMIT_KIB})"
    );
    for (i, s) in sidecars.iter_mut().enumerate() {
        assert!(
            s.0.try_wait().unwrap().is_none(),
            "sidecar {} exited under the flood",
            i + 1
        );
    }
    // Every sidecar answers its operator once the flood lets go.
    drop(held);
    for c in &configs {
        let out = multiaz(&["status", "--json"], c);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["record"]["epoch"].as_u64().unwrap_or(0) >= 1, "{v}");
    }
}

//! `multiaz run`: the sidecar, wired from its configuration. The state file is read
//! first (a corrupt one stops the start), then the engine, the adapters, the peer
//! transport and the admin API are started and the driver runs until SIGINT/SIGTERM.

use crate::adapters::auth::ClusterKey;
use crate::adapters::ec2::{self, Ec2Routes};
use crate::adapters::forward::NftForward;
use crate::adapters::hooks;
use crate::adapters::mysql::{Credentials, MysqlAdapter};
use crate::adapters::peers::{Inbound, InboundLimits, PeerNote, TcpPeers};
use crate::adapters::salvage::{self, LocalBinlog, PeerSalvage};
use crate::adapters::state_file::{StateFile, StateWriter};
use crate::adapters::telemetry::Telemetry;
use crate::address::Address;
use crate::admin;
use crate::config::Config;
use anyhow::{anyhow, Context};
use multiaz_driver::driver::{Adapters, Driver};
use multiaz_driver::retry::Backoff;
use multiaz_engine::NodeId;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The mysql adapter for a configuration (also used by `multiaz check`).
pub fn mysql_adapter(config: &Config) -> MysqlAdapter {
    let members = config
        .members
        .iter()
        .filter_map(|(id, m)| m.mysql.clone().map(|a| (*id, a)))
        .collect();
    MysqlAdapter::new(
        config.spec.flavour,
        members,
        Credentials {
            user: config.mysql_user.clone(),
            password: config.mysql_password.clone(),
            replication_user: config.replication_user.clone(),
            replication_password: config.replication_password.clone(),
            tls: config.mysql_tls.clone(),
        },
        config.probe_timeout,
        config.spec.timing.step_timeout(),
        config.allow_async,
    )
}

/// The EC2 adapter for a configuration; `on_error` counts API errors by code.
pub async fn ec2_routes(config: &Config, on_error: ec2::ErrorSink) -> anyhow::Result<Ec2Routes> {
    let client = ec2::client(
        &config.aws.region,
        config.aws.endpoint_url.as_deref(),
        Duration::from_millis(config.aws.attempt_timeout_ms),
    )
    .await;
    let vip = config.spec.vip.address;
    let pick = |f: fn(&crate::config::Member) -> Option<String>| -> BTreeMap<NodeId, String> {
        config
            .members
            .iter()
            .filter_map(|(id, m)| f(m).map(|v| (*id, v)))
            .collect()
    };
    Ok(Ec2Routes::new(
        ec2::SdkEc2(client),
        vip,
        pick(|m| m.eni_id.clone()),
        pick(|m| m.instance_id.clone()),
        Backoff {
            deadline: Duration::from_millis(config.aws.api_deadline_ms),
            ..Backoff::default()
        },
        multiaz_driver::vip_routes::random_jitter(),
        on_error,
    ))
}

/// The VIP's forwarding on this host (nftables): to every member's mysqld, from the
/// VIP on this host's own mysqld's port (what clients connect to).
fn vip_forward(config: &Config) -> NftForward {
    let mysqld: BTreeMap<NodeId, Address> = config
        .members
        .iter()
        .filter_map(|(id, m)| m.mysql.clone().map(|a| (*id, a)))
        .collect();
    let port = mysqld.get(&config.me).map_or(3306, |a| a.port);
    NftForward::new(config.spec.vip.address, port, mysqld)
}

/// Raises the soft limit on open files to the hard one (systemd's default soft limit
/// is 1024; the unit sets `LimitNOFILE`): the peer and admin listeners cap their own
/// connections, and the state file, MySQL and EC2 connections must still find a
/// descriptor when strangers knock. Returns (before, after).
fn raise_open_file_limit() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer,
    // which lives on this stack frame for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        let before = r.rlim_cur;
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Some((before, before));
            }
        }
        Some((before, r.rlim_cur))
    }
}

/// Runs the sidecar until a signal or a fatal error (a failed state write).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let me = config.me;
    let store = StateFile::open(&config.state_dir)
        .with_context(|| format!("cannot prepare state_dir {}", config.state_dir.display()))?;
    let restored = store.load()?;
    match raise_open_file_limit() {
        Some((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-file limit")
        }
        Some((before, _)) if before < 4096 => tracing::warn!(
            limit = before,
            "open-file limit is low and cannot be raised: set LimitNOFILE (systemd) or ulimit -n"
        ),
        _ => {}
    }
    tracing::info!(
        node = %me,
        cluster = %config.spec.name,
        state = %store.path().display(),
        restored = restored.is_some(),
        "starting"
    );

    let telemetry = Telemetry::new();
    let mysql = mysql_adapter(&config);
    let errors = telemetry.clone();
    let routes = ec2_routes(&config, Rc::new(move |code: &str| errors.ec2_error(code))).await?;

    let listener = tokio::net::TcpListener::bind(config.peer_listen)
        .await
        .with_context(|| format!("peers.listen {}", config.peer_listen))?;
    let key = ClusterKey::new(config.cluster_key.expose().to_vec()).map_err(|e| anyhow!(e))?;
    let peer_addrs: BTreeMap<NodeId, std::net::SocketAddr> =
        config.members.iter().map(|(id, m)| (*id, m.peer)).collect();
    let salvage = PeerSalvage::new(me, key.clone(), peer_addrs.clone(), telemetry.clone());
    let calls = salvage::handler(salvage::Callee {
        me,
        binlog: config.binlog_dir.clone().map(|dir| LocalBinlog {
            dir,
            index: config.binlog_index.clone(),
        }),
        mysql: mysql.clone(),
        telemetry: telemetry.clone(),
        max_budget: config.spec.timing.salvage_timeout(),
    });
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel();
    let dropped = telemetry.clone();
    let peers = TcpPeers::start(
        me,
        key,
        Inbound {
            listener,
            inbox: peer_tx,
            calls: Some(calls),
            limits: InboundLimits::for_members(
                peer_addrs.values().copied(),
                config.spec.timing.probe_interval(),
            ),
        },
        peer_addrs,
        Rc::new(move |note: PeerNote| {
            if matches!(note, PeerNote::Dropped(_)) {
                dropped.peer_frame_dropped();
            }
            tracing::warn!("{note}");
        }),
    );

    let (driver, handle) = Driver::new(
        config.spec.clone(),
        me,
        restored,
        Adapters {
            mysql,
            salvage,
            routes,
            peers,
            store: StateWriter::start(store).context("starting the state writer thread")?,
            observer: telemetry.clone(),
            hooks: hooks::HookScripts::new(config.hooks.clone()),
            forward: vip_forward(&config),
        },
    )?;
    let inbox = handle.inbox.clone();
    tokio::task::spawn_local(async move {
        while let Some(m) = peer_rx.recv().await {
            if inbox.send(m).is_err() {
                return;
            }
        }
    });

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin.listen {}", config.admin_listen))?;
    let app = admin::router(
        config.spec.clone(),
        telemetry,
        handle.operator.clone(),
        config.admin_token.clone(),
    );
    let admin_tls = match &config.admin_tls {
        Some(t) => Some(
            crate::admin::tls::server_config(&t.cert_file, t.key.expose())
                .map_err(|e| anyhow!("{}: {e}", config.file.display()))?,
        ),
        None => None,
    };
    tokio::spawn(admin::serve(
        admin_listener,
        app,
        admin::AdminLimits::default(),
        admin_tls,
    ));
    tracing::info!(peers = %config.peer_listen, admin = %config.admin_listen, "running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = driver.run() => r.map_err(|e| anyhow!("{e}")),
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); Ok(()) }
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
    }
}

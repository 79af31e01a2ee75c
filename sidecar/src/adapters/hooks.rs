//! Running the operator's hooks: the command configured for a hook point, with the
//! details as JSON on stdin and as `MULTIAZ_*` environment variables, bounded by the
//! configured timeout (past it, the hook's whole process group is killed).
//!
//! A hook gets no other environment than those variables and [`PASSED_ON`]: the
//! sidecar's own may hold the MySQL password, the cluster key, the admin token or AWS
//! keys (`*_env` settings), and a hook is any program an operator points at.

use crate::config::Hooks;
use multiaz_engine::{HookCall, HookPoint};
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

impl Hooks {
    fn command(&self, point: HookPoint) -> Option<&Vec<String>> {
        match point {
            HookPoint::PreFailover => self.pre_failover.as_ref(),
            HookPoint::PostFailover => self.post_failover.as_ref(),
            HookPoint::PreSwitchover => self.pre_switchover.as_ref(),
            HookPoint::PostSwitchover => self.post_switchover.as_ref(),
        }
    }
}

/// The sidecar's environment variables a hook inherits: where programs are, who and
/// where it runs as, the locale, proxies and the AWS region and profile names (no
/// keys); nothing else of it.
pub const PASSED_ON: [&str; 15] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "AWS_REGION",
    "AWS_PROFILE",
];

/// The environment a hook gets besides the JSON on its stdin.
pub fn environment(call: &HookCall) -> Vec<(&'static str, String)> {
    let node = |n: Option<multiaz_engine::NodeId>| n.map(|n| n.0.to_string()).unwrap_or_default();
    let mut env = vec![
        ("MULTIAZ_HOOK", call.point.name().to_string()),
        ("MULTIAZ_EPOCH", call.epoch.to_string()),
        ("MULTIAZ_OLD_MASTER", node(call.old_master)),
        ("MULTIAZ_NEW_MASTER", node(call.new_master)),
        ("MULTIAZ_REASON", call.reason.clone()),
    ];
    if let Some(ok) = call.success {
        env.push(("MULTIAZ_SUCCESS", if ok { "1" } else { "0" }.into()));
    }
    if let Some(why) = &call.why {
        env.push(("MULTIAZ_WHY", why.clone()));
    }
    if let Some(ms) = call.duration_ms {
        env.push(("MULTIAZ_DURATION_MS", ms.to_string()));
    }
    if let Some(salvage) = &call.salvage {
        let text = match salvage {
            Ok(r) => format!("recovered {}", r.recovered),
            Err(e) => format!("failed: {e}"),
        };
        env.push(("MULTIAZ_SALVAGE", text));
    }
    env
}

/// Runs one hook; `Err` says why it failed (it could not start, exited non-zero, or
/// ran past `timeout`).
pub async fn run_one(argv: &[String], call: &HookCall, timeout: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty hook command")?;
    let inherited = PASSED_ON
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(inherited)
        .envs(environment(call))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its own process group, so that what it started dies with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let group = child.id();
    let json = serde_json::to_vec(call).map_err(|e| e.to_string())?;
    let stdin = child.stdin.take();
    let run = async {
        if let Some(mut stdin) = stdin {
            // A hook that does not read its stdin is fine. Dropped here: end of input.
            let _ = stdin.write_all(&json).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            if let Some(pgid) = group {
                // What the hook started (a `sleep &`, a stuck child) goes with it.
                // SAFETY: kill(2) with a negative pid signals a process group; no
                // memory is involved.
                unsafe {
                    libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            Err(format!("{program} still running after {timeout:?}: killed"))
        }
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
    }
}

/// The configured hook scripts, as the driver runs them. Failures are logged; only a
/// failing pre hook with `veto = true` is reported to the engine (as a veto).
#[derive(Clone)]
pub struct HookScripts(Rc<Hooks>);

impl HookScripts {
    pub fn new(hooks: Hooks) -> Self {
        HookScripts(Rc::new(hooks))
    }
}

impl multiaz_driver::adapters::Hooks for HookScripts {
    async fn run(&self, call: HookCall) -> Result<(), String> {
        let hooks = &self.0;
        let Some(argv) = hooks.command(call.point) else {
            return Ok(());
        };
        let point = call.point;
        let timeout = Duration::from_millis(hooks.timeout_ms);
        match run_one(argv, &call, timeout).await {
            Ok(()) => {
                tracing::info!(hook = %point, epoch = call.epoch, "hook ran");
                Ok(())
            }
            Err(why) if point.is_pre() && hooks.veto => {
                tracing::warn!(hook = %point, "hook failed, vetoing: {why}");
                Err(why)
            }
            Err(why) => {
                tracing::warn!(hook = %point, "hook failed (no veto configured): {why}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiaz_engine::NodeId;

    fn call(point: HookPoint) -> HookCall {
        HookCall {
            point,
            epoch: 7,
            old_master: Some(NodeId(1)),
            new_master: Some(NodeId(2)),
            reason: "planned".into(),
            success: Some(true),
            why: None,
            duration_ms: Some(42),
            positions: [(NodeId(2), "0-2-9".to_string())].into(),
            salvage: None,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_hook_gets_the_details_on_stdin_and_in_its_environment() {
        let dir = std::env::temp_dir().join(format!("multiaz-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!(
            "cat > {0}.json; echo $MULTIAZ_HOOK $MULTIAZ_EPOCH $MULTIAZ_OLD_MASTER $MULTIAZ_NEW_MASTER $MULTIAZ_SUCCESS $MULTIAZ_DURATION_MS > {0}",
            out.display()
        );
        let c = call(HookPoint::PostSwitchover);
        block_on(run_one(&sh(&script), &c, Duration::from_secs(5))).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert_eq!(env.trim(), "post-switchover 7 1 2 1 42");
        let json: HookCall =
            serde_json::from_str(&std::fs::read_to_string(dir.join("out.json")).unwrap()).unwrap();
        assert_eq!(json, c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failure_timeout_and_a_missing_program_are_errors_that_say_why() {
        let c = call(HookPoint::PreFailover);
        let e = block_on(run_one(&sh("exit 3"), &c, Duration::from_secs(5))).unwrap_err();
        assert!(e.contains("exit status: 3"), "{e}");
        let e = block_on(run_one(&sh("sleep 5"), &c, Duration::from_millis(100))).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        let e = block_on(run_one(
            &["/no/such/hook".to_string()],
            &c,
            Duration::from_secs(1),
        ))
        .unwrap_err();
        assert!(e.contains("cannot start /no/such/hook"), "{e}");
    }

    #[test]
    fn a_hook_inherits_no_secret_from_the_sidecars_environment() {
        // `cargo test` runs this binary with CARGO_* set: a stand-in for the sidecar's
        // own variables (MYSQL password, cluster key, AWS keys via `*_env`).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!("env > {}", out.display());
        block_on(run_one(
            &sh(&script),
            &call(HookPoint::PreFailover),
            Duration::from_secs(5),
        ))
        .unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(
            names.contains(&"MULTIAZ_HOOK") && names.contains(&"PATH"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with("CARGO")), "{names:?}");
    }

    #[test]
    fn what_a_hook_started_dies_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let e = block_on(run_one(
            &sh(&script),
            &call(HookPoint::PreFailover),
            Duration::from_secs(2),
        ))
        .unwrap_err();
        assert!(e.contains("killed"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Reaped by its shell's end or by init: gone within a moment either way.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: signal 0 only asks whether the process exists.
            let exists = unsafe { libc::kill(pid, 0) == 0 };
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
            !exists || zombie
        });
        assert!(gone, "the hook's background sleep {pid} is still running");
    }

    #[test]
    fn only_a_failing_pre_hook_with_veto_on_vetoes() {
        let failing = Hooks {
            pre_failover: Some(sh("exit 1")),
            post_failover: Some(sh("exit 1")),
            veto: true,
            timeout_ms: 2000,
            ..Hooks::default()
        };
        use multiaz_driver::adapters::Hooks as _;
        let run = HookScripts::new(failing.clone());
        assert!(block_on(run.run(call(HookPoint::PreFailover))).is_err());
        assert!(block_on(run.run(call(HookPoint::PostFailover))).is_ok());
        assert!(
            block_on(run.run(call(HookPoint::PreSwitchover))).is_ok(),
            "none configured"
        );
        let lenient = HookScripts::new(Hooks {
            veto: false,
            ..failing
        });
        assert!(block_on(lenient.run(call(HookPoint::PreFailover))).is_ok());
    }
}

//! Running the operator's hooks: the command configured for a hook point, with the
//! details as JSON on stdin and as `MULTIAZ_*` environment variables, bounded by the
//! configured timeout (the process is killed past it).

use crate::config::Hooks;
use crate::driver::HookRunner;
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
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(environment(call))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let json = serde_json::to_vec(call).map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(&json).await;
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("{program} still running after {timeout:?}: killed"))
        }
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
    }
}

/// The driver's hook runner for this configuration. Failures are logged; only a
/// failing pre hook with `veto = true` is reported to the engine (as a veto).
pub fn runner(hooks: Hooks) -> HookRunner {
    let hooks = Rc::new(hooks);
    Rc::new(move |call: HookCall| {
        let hooks = hooks.clone();
        Box::pin(async move {
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
        })
    })
}

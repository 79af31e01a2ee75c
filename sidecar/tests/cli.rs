//! The `multiaz` binary refuses bad input with an error that names it, and its help
//! says what each command does.

mod example_config;

use example_config::{with_env_secrets, SECRET_ENV};
use std::path::Path;
use std::process::{Command, Output};

fn multiaz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multiaz"))
        .args(args)
        .envs(SECRET_ENV)
        .output()
        .expect("multiaz runs")
}

/// The example config with secrets from the environment and state in `dir`.
fn config(dir: &Path, edit: impl Fn(String) -> String) -> String {
    let text = with_env_secrets()
        .replace("/var/lib/multiaz", &dir.join("state").display().to_string())
        .replace("0.0.0.0:7001", "127.0.0.1:0")
        .replace("127.0.0.1:7080", "127.0.0.1:0");
    let path = dir.join("multiaz.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_describes_every_command() {
    let top = multiaz(&["--help"]);
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    for cmd in [
        "run",
        "check",
        "status",
        "switchover",
        "ack",
        "pause",
        "resume",
        "binlog",
    ] {
        assert!(text.contains(cmd), "--help lists {cmd}: {text}");
    }
    let check = String::from_utf8_lossy(&multiaz(&["check", "--help"]).stdout).into_owned();
    assert!(
        check.contains("binlog_format") && check.contains("exits 1"),
        "{check}"
    );
    let run = String::from_utf8_lossy(&multiaz(&["run", "--help"]).stdout).into_owned();
    assert!(
        run.contains("state_dir") && run.contains("/metrics"),
        "{run}"
    );
}

#[test]
fn operator_commands_refuse_a_bad_node_or_a_missing_token_before_any_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // The example's admin token is taken out (see `config`): changes are refused.
    let c = config(&dir, |t| t);
    let out = multiaz(&["switchover", "--to", "db-b", "--config", &c]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no admin token configured"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.join("token"), "t0ken").unwrap();
    let token = format!("[admin]\ntoken_file = \"{}\"", dir.join("token").display());
    let c = config(&dir, |t| t.replace("[admin]", &token));
    // Readable by others: refused, naming the file and the fix.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let out = multiaz(&["switchover", "--to", "db-z", "--config", &c]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("admin.token") && e.contains("mode 644") && e.contains("chmod 600"),
        "{e}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let out = multiaz(&["switchover", "--to", "db-z", "--config", &c]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("db-z") && e.contains("db-a (1)"), "{e}");
    let help = String::from_utf8_lossy(&multiaz(&["switchover", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--dry-run") && help.contains("switchover_max_lag"),
        "{help}"
    );
}

#[test]
fn an_unknown_key_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), |t| t.replace("probe_failures", "probe_falures"));
    let o = multiaz(&["run", "--config", &path]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&path) && e.contains("probe_falures"), "{e}");
}

#[test]
fn a_missing_config_file_is_named() {
    let o = multiaz(&["check", "--config", "/nonexistent/multiaz.toml"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/multiaz.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_corrupt_state_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), |t| t);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let state = dir.path().join("state").join("raft-state");
    std::fs::write(&state, b"multiaz-state v1 garbage").unwrap();
    let o = multiaz(&["run", "--config", &path]);
    assert!(!o.status.success(), "started on a corrupt state file");
    let e = stderr(&o);
    assert!(
        e.contains("corrupt") && e.contains("refusing to start"),
        "{e}"
    );
}

#[test]
fn secrets_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), |t| t.replace("node_id = 1", "node_id = 7"));
    let o = multiaz(&["run", "--config", &path]);
    assert!(!o.status.success());
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(all.contains("node_id"), "{all}");
    assert!(
        !all.contains("s3cret") && !all.contains("0123456789abcdef"),
        "{all}"
    );
}

/// One recommended server configuration: README shows the very file the tests and the
/// container hosts run with (a setting cannot drift between them).
#[test]
fn readme_shows_the_recommended_server_settings_verbatim() {
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(multiaz_sidecar::MARIADB_CNF),
        "README must show sidecar/examples/mariadb.cnf as it is"
    );
}

#[test]
fn a_password_in_the_apply_url_is_warned_about_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = multiaz(&[
        "binlog",
        "salvage",
        "--dir",
        &dir.path().join("none").display().to_string(),
        "--after",
        "",
        "--apply",
        "mysql://repair:pw-in-argv-123@127.0.0.1:1",
    ]);
    assert!(!out.status.success(), "no binlog there");
    let e = stderr(&out);
    assert!(
        e.contains("--apply holds a password") && e.contains("MULTIAZ_APPLY_PASSWORD"),
        "{e}"
    );
    assert!(!e.contains("pw-in-argv-123"), "{e}");
}

//! What the real-server tests share: finding the programs, starting MariaDB servers on
//! loopback ports, and talking to them.
#![allow(dead_code)] // each test binary uses its own part

use multiaz_engine::Flavour;
use multiaz_testkit::server::{ServerOptions, ServerTls};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod cluster;

pub const PASSWORD: &str = "multiaz-test-password";

/// Where a TLS test run keeps its CA and the servers' certificate and key: when this
/// directory exists under a run's directory, its servers take TLS and require it of
/// the `multiaz` account (the sidecar's and replication's).
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// The CA file of a TLS run.
pub fn tls_ca(dir: &Path) -> Option<PathBuf> {
    Some(tls_dir(dir).join("ca.pem")).filter(|p| p.exists())
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rcgen), under `dir`.
pub fn make_certs(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let tls = tls_dir(dir);
    std::fs::create_dir_all(&tls).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "multiaz test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_cert = server
        .signed_by(&server_key, &Issuer::new(ca, ca_key))
        .unwrap();
    std::fs::write(tls.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(tls.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(tls.join("server-key.pem"), server_key.serialize_pem()).unwrap();
    tls.join("ca.pem")
}

/// The CA to connect with, per server port, for the TLS runs.
static TLS_PORTS: Mutex<BTreeMap<u16, PathBuf>> = Mutex::new(BTreeMap::new());

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn find(program: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/usr/bin", "/sbin"]) {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{program} not found (PATH, /usr/sbin, or ${env}). This test needs Debian's \
         mariadb-server and `pip install 'moto[server]'`; `ci/test` installs both."
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Mariadb {
    pub port: u16,
    pub socket: PathBuf,
    pub child: Guard,
}

/// A server's own temporary directory: a SIGKILLed server leaves its temporary tables
/// behind, and a later server whose process id matches trips over them in a shared
/// /tmp (seen once as a failed mariadb-install-db).
fn tmpdir(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("db{id}.tmp"))
}

pub fn start_mariadb(dir: &Path, id: u32, master: bool) -> Mariadb {
    let data = dir.join(format!("db{id}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(tmpdir(dir, id)).unwrap();
    let out = Command::new(find("mariadb-install-db", "MULTIAZ_MARIADB_INSTALL_DB"))
        .args([
            "--no-defaults",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmpdir(dir, id).display()))
        .output()
        .expect("mariadb-install-db runs");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let socket = dir.join(format!("db{id}.sock"));
    if let Some(ca) = tls_ca(dir) {
        TLS_PORTS.lock().unwrap().insert(port, ca);
    }
    let child = spawn_mariadbd(dir, id, port, master, &[]);
    Mariadb {
        port,
        socket,
        child,
    }
}

/// Starts mariadbd on an existing data directory (`db{id}` under `dir`): a first start,
/// or a restart after a kill, with the same port and socket. `master`: writable, with
/// semi-sync source on; otherwise read_only. `extra`: more server options.
pub fn spawn_mariadbd(dir: &Path, id: u32, port: u16, master: bool, extra: &[&str]) -> Guard {
    let path = |name: String| dir.join(name).display().to_string();
    std::fs::create_dir_all(tmpdir(dir, id)).unwrap();
    // The recommended settings (README, `multiaz check`), then this instance's own.
    let mut server = ServerOptions::new(
        Flavour::Mariadb,
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mariadb.cnf"),
        &path(format!("db{id}")),
        &path(format!("db{id}.sock")),
    );
    server.port = port;
    server.server_id = id;
    server.master = master;
    server.pid_file = Some(path(format!("db{id}.pid")));
    server.log_error = Some(path(format!("db{id}.err")));
    server.tmpdir = Some(tmpdir(dir, id).display().to_string());
    server.tls = tls_ca(dir).map(|ca| {
        let tls = tls_dir(dir);
        ServerTls {
            ca: ca.display().to_string(),
            cert: tls.join("server.pem").display().to_string(),
            key: tls.join("server-key.pem").display().to_string(),
        }
    });
    server.extra = extra.iter().map(|e| e.to_string()).collect();
    let child = Command::new(find("mariadbd", "MULTIAZ_MARIADBD"))
        .args(server.args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd starts");
    Guard(child)
}

/// Waits until `db` takes connections, then creates the sidecar's user (`multiaz`,
/// all privileges) and runs `more` as root, all outside the binlog.
pub async fn ready_with_users(db: &Mariadb, more: &str) {
    wait_until(
        "mariadbd accepts connections",
        Duration::from_secs(60),
        || async { db.socket.exists().then_some(()) },
    )
    .await;
    // In a TLS run the account the sidecar and replication use takes TLS only.
    let require = if TLS_PORTS.lock().unwrap().contains_key(&db.port) {
        " REQUIRE SSL"
    } else {
        ""
    };
    root_sql(
        db,
        &format!(
            "SET sql_log_bin = 0; CREATE USER 'multiaz'@'%' IDENTIFIED BY '{PASSWORD}'{require}; \
             GRANT ALL ON *.* TO 'multiaz'@'%' WITH GRANT OPTION; {more}"
        ),
    );
}

/// Runs SQL as root over the server's socket with the `mariadb` client.
pub fn root_sql(db: &Mariadb, sql: &str) {
    let out = Command::new(find("mariadb", "MULTIAZ_MARIADB_CLIENT"))
        .args(["--no-defaults", "-uroot"])
        .arg(format!("--socket={}", db.socket.display()))
        .args(["-e", sql])
        .output()
        .expect("mariadb client runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A connection over TCP; with TLS (checked against the run's CA) to a TLS run's server.
pub async fn connect(port: u16, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
    let ca = TLS_PORTS.lock().unwrap().get(&port).cloned();
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .ssl_opts(ca.map(|ca| {
                SslOpts::default()
                    .with_root_certs(vec![ca.into()])
                    .with_disable_built_in_roots(true)
            })),
    )
    .await
}

pub async fn query_row(port: u16, sql: &str) -> Option<Row> {
    let mut c = tokio::time::timeout(Duration::from_secs(1), connect(port, "multiaz", PASSWORD))
        .await
        .ok()?
        .ok()?;
    let r = c.query_first::<Row, _>(sql).await.ok().flatten();
    let _ = c.disconnect().await;
    r
}

/// `@@read_only` of `db` (`None`: it did not answer).
pub async fn read_only(db: &Mariadb) -> Option<bool> {
    let r = query_row(db.port, "SELECT @@read_only AS ro").await?;
    Some(col(&r, "ro") == "1")
}

pub fn col(row: &Row, name: &str) -> String {
    row.get_opt::<Option<String>, &str>(name)
        .and_then(|r| r.ok())
        .flatten()
        .unwrap_or_default()
}

/// A process's resident memory now and at its peak (KiB) and CPU time used so far (s),
/// from /proc (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_s: f64,
}

pub fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12] // utime, stime (fields 14 and 15 of the whole line)
        .iter()
        .filter_map(|i| rest.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Usage {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_s: ticks as f64 / 100.0,
    }
}

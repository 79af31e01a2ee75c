//! A test server's command line: the only place the tests' MariaDB and MySQL instance
//! options are written. The settings multiaz relies on come from the product's own
//! settings file (`sidecar/examples/*.cnf`, given as `--defaults-file`); what follows
//! it here is only what differs per instance (paths, port, id, role, TLS).

use multiaz_engine::Flavour;

/// One test server instance.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub flavour: Flavour,
    /// The settings file (first on the command line, as mysqld requires).
    pub defaults_file: String,
    pub datadir: String,
    pub socket: String,
    pub port: u16,
    pub bind_address: String,
    pub server_id: u32,
    /// The cluster's first master on its first start: writable, semi-sync source on.
    /// Otherwise read_only with the replica side of semi-sync on, as the settings
    /// file leaves every server (a restarted master is made writable by its sidecar).
    pub master: bool,
    pub buffer_pool: String,
    pub pid_file: Option<String>,
    pub log_error: Option<String>,
    pub tmpdir: Option<String>,
    /// Where `SELECT ... INTO OUTFILE` may write (MySQL refuses to start without a
    /// directory it can check when the package's default is missing).
    pub secure_file_priv: Option<String>,
    pub tls: Option<ServerTls>,
    /// More options, last (they win).
    pub extra: Vec<String>,
}

/// The server's certificate, key and the CA its clients check it against.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl ServerOptions {
    /// A server with the given paths and identity; the rest at the tests' defaults
    /// (root user, 16 MB buffer pool, loopback only).
    pub fn new(flavour: Flavour, defaults_file: &str, datadir: &str, socket: &str) -> Self {
        ServerOptions {
            flavour,
            defaults_file: defaults_file.into(),
            datadir: datadir.into(),
            socket: socket.into(),
            port: 3306,
            bind_address: "127.0.0.1".into(),
            server_id: 1,
            master: false,
            buffer_pool: "16M".into(),
            pid_file: None,
            log_error: None,
            tmpdir: None,
            secure_file_priv: None,
            tls: None,
            extra: Vec::new(),
        }
    }

    /// The arguments after the program's name.
    pub fn args(&self) -> Vec<String> {
        let on = |b: bool| if b { "ON" } else { "OFF" };
        let mut a = vec![
            format!("--defaults-file={}", self.defaults_file),
            "--user=root".into(),
            format!("--datadir={}", self.datadir),
            format!("--socket={}", self.socket),
            format!("--port={}", self.port),
            format!("--bind-address={}", self.bind_address),
            "--skip-name-resolve".into(),
            format!("--innodb-buffer-pool-size={}", self.buffer_pool),
            format!("--server-id={}", self.server_id),
            format!("--read-only={}", on(!self.master)),
        ];
        for (flag, value) in [
            ("pid-file", &self.pid_file),
            ("log-error", &self.log_error),
            ("tmpdir", &self.tmpdir),
            ("secure-file-priv", &self.secure_file_priv),
        ] {
            if let Some(v) = value {
                a.push(format!("--{flag}={v}"));
            }
        }
        match self.flavour {
            Flavour::Mysql => a.extend([
                format!("--super-read-only={}", on(!self.master)),
                format!("--rpl-semi-sync-source-enabled={}", on(self.master)),
                format!("--rpl-semi-sync-replica-enabled={}", on(!self.master)),
                // The chaos runs rebuild a server with CLONE.
                "--plugin-load-add=mysql_clone.so".into(),
                // No X protocol listener: nothing here speaks it.
                "--mysqlx=OFF".into(),
            ]),
            Flavour::Mariadb => a.extend([
                format!("--rpl-semi-sync-master-enabled={}", on(self.master)),
                format!("--rpl-semi-sync-slave-enabled={}", on(!self.master)),
            ]),
        }
        if let Some(t) = &self.tls {
            a.extend([
                format!("--ssl-ca={}", t.ca),
                format!("--ssl-cert={}", t.cert),
                format!("--ssl-key={}", t.key),
            ]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flavour_gets_its_own_semi_sync_and_read_only_names() {
        let mut o = ServerOptions::new(Flavour::Mysql, "/etc/my.cnf", "/d", "/s");
        o.master = true;
        let mysql = o.args().join(" ");
        assert!(mysql.starts_with("--defaults-file=/etc/my.cnf "), "{mysql}");
        assert!(mysql.contains("--super-read-only=OFF"));
        assert!(mysql.contains("--rpl-semi-sync-source-enabled=ON"));
        o.flavour = Flavour::Mariadb;
        o.master = false;
        o.extra = vec!["--skip-networking".into()];
        let mariadb = o.args().join(" ");
        assert!(!mariadb.contains("super"), "{mariadb}");
        assert!(mariadb.contains("--read-only=ON"));
        assert!(mariadb.contains("--rpl-semi-sync-slave-enabled=ON"));
        assert!(mariadb.ends_with("--skip-networking"));
    }
}

//! What the run watches: the sidecars' status (their admin API), and the logs the
//! agents write into their work directories (read incrementally, complete lines only).

use multiaz_sidecar::admin::client::AdminEndpoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// One sidecar's `GET /status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub v: Value,
}

pub async fn status(admin: AdminEndpoint) -> Result<Status, String> {
    let (code, body) =
        multiaz_sidecar::admin::client::call(&admin, axum::http::Method::GET, "/status", None)
            .await?;
    if !code.is_success() {
        return Err(format!("{admin}: {code} {}", body.trim()));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{admin}: {e}"))?;
    Ok(Status { v })
}

impl Status {
    pub fn leader(&self) -> Option<u64> {
        self.v["leader"].as_u64()
    }

    pub fn epoch(&self) -> u64 {
        self.v["record"]["epoch"].as_u64().unwrap_or(0)
    }

    pub fn master(&self) -> Option<u64> {
        self.v["record"]["master"].as_u64()
    }

    pub fn failover_in_progress(&self) -> bool {
        !self.v["record"]["failover"].is_null()
    }

    pub fn blocked(&self) -> bool {
        !self.v["failover_blocked_until_wall_ms"].is_null()
    }

    fn nodes(&self) -> impl Iterator<Item = (u64, &Value)> {
        self.v["nodes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, n)| Some((id.parse().ok()?, n)))
    }

    pub fn live_nodes(&self) -> Vec<u64> {
        self.nodes()
            .filter(|(_, n)| n["sidecar_live"] == true)
            .map(|(id, _)| id)
            .collect()
    }

    pub fn all_live(&self) -> bool {
        self.nodes().all(|(_, n)| n["sidecar_live"] == true)
    }

    pub fn role(&self, id: u64) -> Option<String> {
        self.nodes()
            .find(|(i, _)| *i == id)
            .and_then(|(_, n)| n["role"].as_str().map(str::to_string))
    }

    /// Its mysqld is up as far as this sidecar knows.
    pub fn mysqld_up(&self, id: u64) -> bool {
        self.nodes()
            .find(|(i, _)| *i == id)
            .is_some_and(|(_, n)| n["mysqld"].get("Up").is_some())
    }

    pub fn quarantined(&self) -> BTreeMap<u64, String> {
        self.v["record"]["quarantined"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, why)| Some((id.parse().ok()?, why.as_str()?.to_string())))
            .collect()
    }

    pub fn journal(&self) -> Vec<Value> {
        self.v["record"]["journal"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// New complete lines of a growing file.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    pub fn lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = String::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_string(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&buf);
        let mut out = Vec::new();
        while let Some(n) = self.partial.find('\n') {
            out.push(self.partial[..n].to_string());
            self.partial.drain(..=n);
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub client: u32,
    pub seq: u64,
    pub at_ms: u64,
    /// From the INSERT sent to its acknowledgement.
    pub latency_us: u64,
    pub gtid: String,
}

/// The clients' two ways to the master: every client host has a writer through the
/// VIP (clients 1..=CLIENTS) and one through its HAProxy (the next CLIENTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPath {
    Vip,
    Haproxy,
}

impl ClientPath {
    pub fn has(self, client: u32) -> bool {
        let vip = client as usize <= crate::setup::CLIENTS;
        match self {
            ClientPath::Vip => vip,
            ClientPath::Haproxy => !vip,
        }
    }
}

/// Everything the clients logged so far.
pub struct Workload {
    tails: Vec<Tail>,
    pub acks: Vec<Ack>,
    /// (client, when, what)
    pub errors: Vec<(u32, u64, String)>,
    /// Read-backs that saw less than the newest acknowledged row: (client, when, seq).
    pub missing: Vec<(u32, u64, u64)>,
    /// The newest acknowledgement per client.
    pub last_ack: BTreeMap<u32, u64>,
}

impl Workload {
    pub fn new(logs: Vec<PathBuf>) -> Workload {
        Workload {
            tails: logs.into_iter().map(Tail::new).collect(),
            acks: Vec::new(),
            errors: Vec::new(),
            missing: Vec::new(),
            last_ack: BTreeMap::new(),
        }
    }

    pub fn poll(&mut self) {
        for (i, tail) in self.tails.iter_mut().enumerate() {
            let client = i as u32 + 1;
            for line in tail.lines() {
                let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
                if let Some(rest) = line.strip_prefix("ack ") {
                    let mut w = rest.splitn(4, ' ');
                    let (seq, at, us, gtid) = (w.next(), w.next(), w.next(), w.next());
                    if let (Some(seq), Some(at), Some(us)) = (num(seq), num(at), num(us)) {
                        self.acks.push(Ack {
                            client,
                            seq,
                            at_ms: at,
                            latency_us: us,
                            gtid: gtid.unwrap_or("-").to_string(),
                        });
                        self.last_ack.insert(client, at);
                    }
                    continue;
                }
                let mut w = line.splitn(4, ' ');
                let (kind, a, b, c) = (w.next(), w.next(), w.next(), w.next());
                match kind {
                    Some("err") => {
                        if let Some(at) = num(a) {
                            let what = [b, c].into_iter().flatten().collect::<Vec<_>>().join(" ");
                            self.errors.push((client, at, what));
                        }
                    }
                    Some("missing") => {
                        if let (Some(at), Some(seq)) = (num(a), num(b)) {
                            self.missing.push((client, at, seq));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The first acknowledgement after `t` by a client on `path`.
    pub fn first_ack_after_on(&self, t: u64, path: ClientPath) -> Option<u64> {
        self.acks
            .iter()
            .filter(|a| path.has(a.client))
            .map(|a| a.at_ms)
            .filter(|&at| at > t)
            .min()
    }

    /// The last acknowledgement at or before `t` (any client).
    pub fn last_ack_before(&self, t: u64) -> Option<u64> {
        self.acks
            .iter()
            .map(|a| a.at_ms)
            .filter(|&at| at <= t)
            .max()
    }

    /// The longest stretch without an acknowledgement (any client) from the last one
    /// at or before `from` to the first one after `to`: a switchover's write block,
    /// which begins some time after it was asked for.
    pub fn longest_gap(&self, from: u64, to: u64, path: ClientPath) -> Option<u64> {
        let start = self.last_ack_before(from)?;
        let end = self.first_ack_after_on(to, path)?;
        let mut at: Vec<u64> = self
            .acks
            .iter()
            .filter(|a| path.has(a.client))
            .map(|a| a.at_ms)
            .filter(|&x| x >= start && x <= end)
            .collect();
        at.sort_unstable();
        at.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// Every client has had a write acknowledged since `t`.
    pub fn all_acked_since(&self, t: u64, clients: u32) -> bool {
        (1..=clients).all(|c| self.last_ack.get(&c).is_some_and(|&at| at >= t))
    }
}

#[derive(Debug, Clone)]
pub struct RouteChange {
    pub at_ms: u64,
    pub table: String,
    pub eni: String,
}

/// The router's log: when each kernel table's VIP route changed.
pub struct Routes {
    tail: Tail,
    pub changes: Vec<RouteChange>,
}

impl Routes {
    pub fn new(log: PathBuf) -> Routes {
        Routes {
            tail: Tail::new(log),
            changes: Vec::new(),
        }
    }

    pub fn poll(&mut self) {
        for line in self.tail.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            if let ["route", at, table, eni, _ip] = w[..] {
                if let Ok(at) = at.parse() {
                    self.changes.push(RouteChange {
                        at_ms: at,
                        table: table.to_string(),
                        eni: eni.to_string(),
                    });
                }
            }
        }
    }

    /// Each table's current target.
    pub fn current(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for c in &self.changes {
            m.insert(c.table.clone(), c.eni.clone());
        }
        m
    }

    /// When the last of the tables came to point at its interface in `wanted`
    /// (table, ENI), after `t` (None: not yet).
    pub fn all_as(&self, wanted: &[(String, String)], t: u64) -> Option<u64> {
        let current = self.current();
        if !wanted.iter().all(|(tb, eni)| current.get(tb) == Some(eni)) {
            return None;
        }
        wanted
            .iter()
            .map(|(tb, eni)| {
                self.changes
                    .iter()
                    .filter(|c| &c.table == tb && &c.eni == eni && c.at_ms >= t)
                    .map(|c| c.at_ms)
                    .max()
                    .unwrap_or(t)
            })
            .max()
    }
}

//! Forwarding the VIP's traffic with nftables (the engine's `forward.rs` decides when).
//!
//! A route table that still points the VIP at this host delivers clients' packets here.
//! While another member is the writer, a `dnat` in the prerouting hook sends new
//! connections to the VIP's port on to that member's mysqld, and a `masquerade` in the
//! postrouting hook makes the replies come back through this host (the writer answers
//! this host's address; conntrack undoes both). Connections already open to the local
//! mysqld are untouched: the nat hooks see only a connection's first packet.
//!
//! Everything lives in one table of its own (`ip multiaz`), replaced whole in one
//! `nft -f` transaction: nothing else's rules are touched, and a change is never half
//! applied. The host must forward IPv4 (`net.ipv4.ip_forward = 1`; set here when it
//! is not and this process may), and on EC2 the instance's source/destination check
//! must be off (the VIP route needs that already).

use crate::address::Address;
use multiaz_engine::NodeId;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The nftables table this sidecar owns.
pub const TABLE: &str = "multiaz";
/// `nft` is quick; one that hangs must not hold the next change forever.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Clone)]
pub struct NftForward {
    inner: Rc<Inner>,
}

struct Inner {
    vip: Ipv4Addr,
    /// The port clients reach the VIP on: this host's own mysqld's.
    port: u16,
    /// Every member's mysqld, where VIP traffic may be sent.
    mysqld: BTreeMap<NodeId, Address>,
    nft: String,
    /// Calls numbered as they are made; one applied after a later one changes nothing.
    asked: Cell<u64>,
    applied: Cell<u64>,
    /// One `nft` at a time, in the order asked.
    turn: tokio::sync::Mutex<()>,
}

impl NftForward {
    pub fn new(vip: Ipv4Addr, port: u16, mysqld: BTreeMap<NodeId, Address>) -> NftForward {
        let nft = ["/usr/sbin/nft", "/sbin/nft"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nft")
            .to_string();
        NftForward {
            inner: Rc::new(Inner {
                vip,
                port,
                mysqld,
                nft,
                asked: Cell::new(0),
                applied: Cell::new(0),
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl multiaz_driver::Forward for NftForward {
    fn forward(&self, to: Option<NodeId>) -> impl Future<Output = Result<(), String>> {
        let inner = self.inner.clone();
        let n = inner.asked.get() + 1;
        inner.asked.set(n);
        async move {
            let _turn = inner.turn.lock().await;
            if inner.applied.get() > n {
                return Err("superseded by a later change".into());
            }
            let rules = match to {
                None => ruleset(inner.vip, inner.port, None),
                Some(node) => {
                    let addr = inner
                        .mysqld
                        .get(&node)
                        .ok_or_else(|| format!("{node} has no mysqld address in the config"))?;
                    let ip = resolve(addr).await?;
                    ip_forward_on()?;
                    ruleset(inner.vip, inner.port, Some((ip, addr.port)))
                }
            };
            run_nft(&inner.nft, &rules).await?;
            inner.applied.set(n);
            Ok(())
        }
    }
}

/// The whole table, replaced in one transaction (declaring the table first makes the
/// delete succeed when it does not exist yet).
///
/// Connections keep the path they began on (conntrack), so a change also resets the
/// ones a path no longer holds: with `to`, connections forwarded elsewhere (a writer
/// before this one) and the VIP's connections to the local mysqld (this host was the
/// writer, or served locally); with `to` `None`, every forwarded one. Their clients
/// reconnect and take the path of the moment, rather than reading from a server that
/// is no longer the writer on a connection opened when it was.
pub fn ruleset(vip: Ipv4Addr, port: u16, to: Option<(Ipv4Addr, u16)>) -> String {
    let mut r = format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    let stale = "meta l4proto tcp ct direction original ct status dnat";
    match to {
        Some((ip, to_port)) => r.push_str(&format!(
            "\tchain vip_in {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tip daddr {vip} tcp dport {port} dnat to {ip}:{to_port}\n\
             \t}}\n\
             \tchain vip_out {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip daddr {ip} tcp dport {to_port} ct status dnat masquerade\n\
             \t}}\n\
             \tchain vip_stale {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\t{stale} ct original ip daddr {vip} ip daddr != {ip} reject with tcp reset\n\
             \t}}\n\
             \tchain vip_local {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tip daddr {vip} tcp dport {port} reject with tcp reset\n\
             \t}}\n"
        )),
        None => r.push_str(&format!(
            "\tchain vip_stale {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\t{stale} ct original ip daddr {vip} reject with tcp reset\n\
             \t}}\n"
        )),
    }
    r.push_str("}\n");
    r
}

async fn resolve(addr: &Address) -> Result<Ipv4Addr, String> {
    if let Ok(ip) = addr.host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    // Bounded: a hung resolver must not hold the next change (which may be this host's
    // own `Local`) behind it.
    let found = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((addr.host.as_str(), addr.port)),
    )
    .await
    .map_err(|_| format!("resolving {addr}: no answer in 2 s"))?
    .map_err(|e| format!("resolving {addr}: {e}"))?;
    found
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| format!("{addr} has no IPv4 address (the VIP is IPv4)"))
}

/// Forwarding needs the kernel to route packets that are not its own.
fn ip_forward_on() -> Result<(), String> {
    let now =
        std::fs::read_to_string(IP_FORWARD).map_err(|e| format!("reading {IP_FORWARD}: {e}"))?;
    if now.trim() == "1" {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(|e| {
        format!("net.ipv4.ip_forward is 0 and could not be set ({e}): forwarding needs it on")
    })
}

async fn run_nft(nft: &str, rules: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new(nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running {nft}: {e}"))?;
    let work = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .await
                .map_err(|e| format!("writing to {nft}: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for {nft}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{nft} -f: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    tokio::time::timeout(NFT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("{nft} did not finish in {NFT_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_replaced_whole() {
        let vip = Ipv4Addr::new(10, 0, 100, 10);
        let replace = "table ip multiaz\ndelete table ip multiaz\n";
        let off = ruleset(vip, 3306, None);
        assert!(
            off.starts_with(replace),
            "the old table goes in the same transaction"
        );
        assert!(!off.contains("dnat to"));
        assert!(off.contains("ct status dnat ct original ip daddr 10.0.100.10 reject"));
        let on = ruleset(vip, 3306, Some((Ipv4Addr::new(10, 0, 2, 11), 3307)));
        assert!(on.starts_with(replace));
        assert!(on.contains("ip daddr 10.0.100.10 tcp dport 3306 dnat to 10.0.2.11:3307"));
        assert!(on.contains("ip daddr 10.0.2.11 tcp dport 3307 ct status dnat masquerade"));
        assert!(on.contains("ip daddr != 10.0.2.11 reject with tcp reset"));
        assert!(on.contains("hook input"), "local VIP sessions are reset");
    }
}

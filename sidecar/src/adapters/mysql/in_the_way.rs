//! What stands in the way of the fence's `SET GLOBAL read_only`, and killing it so
//! that no client hears of its commit ([`Dialect::fence_kill`]).

use super::dialect::Dialect;
use super::MysqlAdapter;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Rounds of killing statements that began after the fence's kills before semi-sync
/// is switched off: each round is two queries.
const KILL_ROUNDS: usize = 3;

/// The fence under way on one server.
pub(super) struct InTheWay<'a> {
    pub d: Dialect,
    /// The sidecar's login: its own connections (probes) are left alone.
    pub own_user: &'a str,
    /// The connection whose `SET GLOBAL read_only` is queued.
    pub fence: u32,
}

impl InTheWay<'_> {
    /// [`MysqlAdapter::writers`] and every connection that may still commit
    /// ([`Dialect::may_still_write`]).
    async fn list(&self, conn: &mut Conn) -> Result<Vec<u64>, String> {
        let mut ids = MysqlAdapter::writers(conn).await?;
        let more: Vec<u64> = conn
            .query(self.d.may_still_write(self.own_user, self.fence))
            .await
            .map_err(|e| format!("listing the statements that may still write: {e}"))?;
        ids.extend(more);
        ids.retain(|id| *id != u64::from(self.fence));
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Kills what stands in the way of read_only. A KILL refused (the sidecar's user
    /// may not kill that account's connections) is an error: the fence must not go on
    /// as if that write had been stopped.
    pub async fn kill(&self, conn: &mut Conn) -> Result<usize, String> {
        let ids = self.list(conn).await?;
        MysqlAdapter::kill_each_with(conn, self.d.fence_kill(), &ids)
            .await
            .map_err(|e| format!("{e} (in the way of read_only)"))?;
        Ok(ids.len())
    }

    /// Before semi-sync is switched off to end the killed commits' wait: nothing in
    /// the way of read_only is still running. A write that was missed or survived its
    /// KILL would otherwise commit without a replica and be acknowledged. One that
    /// began after the kills (a COMMIT of a transaction that has written) is killed in
    /// turn, for a few rounds; anything still running after them is an error.
    pub async fn all_killed(&self, conn: &mut Conn) -> Result<(), String> {
        let mut alive = self.still_running(conn).await?;
        for _ in 0..KILL_ROUNDS {
            if alive.is_empty() {
                return Ok(());
            }
            MysqlAdapter::kill_each_with(conn, self.d.fence_kill(), &alive)
                .await
                .map_err(|e| format!("{e} (in the way of read_only)"))?;
            alive = self.still_running(conn).await?;
        }
        match alive.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "connections {alive:?} still write after {KILL_ROUNDS} rounds of KILL: \
                 semi-sync left on, read_only not set"
            )),
        }
    }

    /// What is in the way and not killed yet.
    async fn still_running(&self, conn: &mut Conn) -> Result<Vec<u64>, String> {
        let ids = self.list(conn).await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        conn.query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE COMMAND <> 'Killed' AND ID IN ({list})"
        ))
        .await
        .map_err(|e| format!("listing the connections still writing: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiaz_engine::Flavour;

    #[test]
    fn mariadb_lists_statements_begun_before_the_fence_whatever_their_protocol() {
        let q = Dialect(Flavour::Mariadb).may_still_write("multi'az", 42);
        // A prepared statement runs as `Execute`: only idle, killed, connecting and
        // replication threads are left out, not listed by what they run.
        assert!(q.contains("COMMAND NOT IN ('Sleep', 'Killed'"), "{q}");
        assert!(!q.contains("COMMAND = 'Query'"), "{q}");
        assert!(q.contains("ID <> 42"), "{q}");
        assert!(q.contains("WHERE ID = 42"), "{q}");
        assert!(q.contains("USER <> 'multi''az'"), "{q}");
    }
}

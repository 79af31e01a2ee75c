//! The session a statement ran in on the dead master, from its Query event's status
//! variables: what `mysqlbinlog` restores before it prints a statement. A statement
//! replayed in another session would otherwise run under the salvage connection's
//! sql_mode, character sets, time zone, foreign key checks, auto-increment step and
//! clock — and could store other values than the master did (a DDL's defaults, a
//! `NOW()`, a string converted through another character set).

use mysql_common::binlog::events::{QueryEvent, StatusVarVal};

/// `Q_FLAGS2` bits (sql/sql_priv.h).
const OPTION_AUTO_IS_NULL: u32 = 1 << 14;
const OPTION_NO_FOREIGN_KEY_CHECKS: u32 = 1 << 26;
const OPTION_RELAXED_UNIQUE_CHECKS: u32 = 1 << 27;

/// What the statement's session had set; `None`: the event does not say (an older
/// server, or the other flavour's codes), and the replaying session's value stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// When the statement ran (Unix seconds and microseconds): `NOW()` on replay.
    pub timestamp: u32,
    pub microseconds: Option<u32>,
    pub flags2: Option<u32>,
    pub sql_mode: Option<u64>,
    /// `auto_increment_increment`, `auto_increment_offset`.
    pub auto_increment: Option<(u16, u16)>,
    /// `character_set_client`, `collation_connection`, `collation_server` (ids).
    pub charset: Option<(u16, u16, u16)>,
    pub time_zone: Option<String>,
    pub lc_time_names: Option<u16>,
    pub collation_database: Option<u16>,
    /// MySQL 8.0+.
    pub default_collation_for_utf8mb4: Option<u16>,
    pub explicit_defaults_for_timestamp: Option<bool>,
}

impl Session {
    /// Reads the status variables of `q` (written at `timestamp`). Those that do not
    /// parse are left out, as if not written.
    pub fn of(q: &QueryEvent<'_>, timestamp: u32) -> Session {
        let mut s = Session {
            timestamp,
            ..Session::default()
        };
        // The iterator stops at the first code it does not know (it cannot tell that
        // one's length): MariaDB's own codes (128 and up) come after those read here.
        for var in q.status_vars().iter() {
            match var.get_value() {
                Ok(StatusVarVal::Flags2(f)) => s.flags2 = Some(f.0),
                Ok(StatusVarVal::SqlMode(m)) => s.sql_mode = Some(m.0),
                Ok(StatusVarVal::AutoIncrement { increment, offset }) => {
                    s.auto_increment = Some((increment, offset))
                }
                Ok(StatusVarVal::Charset {
                    charset_client,
                    collation_connection,
                    collation_server,
                }) => s.charset = Some((charset_client, collation_connection, collation_server)),
                Ok(StatusVarVal::TimeZone(z)) => {
                    s.time_zone = Some(z.as_str().into_owned()).filter(|z| !z.is_empty())
                }
                Ok(StatusVarVal::LcTimeNames(n)) => s.lc_time_names = Some(n),
                Ok(StatusVarVal::CharsetDatabase(n)) => s.collation_database = Some(n),
                Ok(StatusVarVal::Microseconds(us)) => s.microseconds = Some(us),
                Ok(StatusVarVal::DefaultCollationForUtf8mb4(n)) => {
                    s.default_collation_for_utf8mb4 = Some(n)
                }
                Ok(StatusVarVal::ExplicitDefaultsForTimestamp(b)) => {
                    s.explicit_defaults_for_timestamp = Some(b)
                }
                _ => {}
            }
        }
        s
    }

    /// The `SET` statements that recreate this session, as `mysqlbinlog` writes them
    /// (ids for character sets and collations, a number for sql_mode: each replayed
    /// on the flavour that wrote it). `quote` quotes a string literal.
    pub fn statements(&self, quote: impl Fn(&[u8]) -> String) -> Vec<String> {
        let mut set: Vec<String> = Vec::new();
        if let Some(f) = self.flags2 {
            let on = |bit: u32| u8::from(f & bit != 0);
            let off = |bit: u32| u8::from(f & bit == 0);
            set.push(format!(
                "@@session.foreign_key_checks={}, @@session.sql_auto_is_null={}, \
                 @@session.unique_checks={}",
                off(OPTION_NO_FOREIGN_KEY_CHECKS),
                on(OPTION_AUTO_IS_NULL),
                off(OPTION_RELAXED_UNIQUE_CHECKS)
            ));
        }
        if let Some(m) = self.sql_mode {
            set.push(format!("@@session.sql_mode={m}"));
        }
        if let Some((inc, off)) = self.auto_increment {
            set.push(format!(
                "@@session.auto_increment_increment={inc}, @@session.auto_increment_offset={off}"
            ));
        }
        if let Some((client, connection, server)) = self.charset {
            set.push(format!(
                "@@session.character_set_client={client}, \
                 @@session.collation_connection={connection}, @@session.collation_server={server}"
            ));
        }
        if let Some(z) = &self.time_zone {
            set.push(format!("@@session.time_zone={}", quote(z.as_bytes())));
        }
        if let Some(n) = self.lc_time_names {
            set.push(format!("@@session.lc_time_names={n}"));
        }
        if let Some(n) = self.collation_database {
            set.push(format!("@@session.collation_database={n}"));
        }
        if let Some(n) = self.default_collation_for_utf8mb4 {
            set.push(format!("@@session.default_collation_for_utf8mb4={n}"));
        }
        if let Some(b) = self.explicit_defaults_for_timestamp {
            set.push(format!(
                "@@session.explicit_defaults_for_timestamp={}",
                u8::from(b)
            ));
        }
        let mut out = vec![match self.microseconds {
            Some(us) => format!("SET TIMESTAMP={}.{us:06}", self.timestamp),
            None => format!("SET TIMESTAMP={}", self.timestamp),
        }];
        if !set.is_empty() {
            out.push(format!("SET {}", set.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(b: &[u8]) -> String {
        format!("'{}'", String::from_utf8_lossy(b))
    }

    #[test]
    fn a_session_is_recreated_as_mysqlbinlog_would() {
        let s = Session {
            timestamp: 1_700_000_000,
            microseconds: Some(42),
            flags2: Some(OPTION_NO_FOREIGN_KEY_CHECKS | OPTION_AUTO_IS_NULL),
            sql_mode: Some(1_436_549_152),
            auto_increment: Some((3, 2)),
            charset: Some((255, 255, 8)),
            time_zone: Some("+02:00".into()),
            lc_time_names: Some(0),
            collation_database: Some(33),
            default_collation_for_utf8mb4: Some(255),
            explicit_defaults_for_timestamp: Some(true),
        };
        let out = s.statements(quote);
        assert_eq!(out[0], "SET TIMESTAMP=1700000000.000042");
        let set = &out[1];
        for part in [
            "@@session.foreign_key_checks=0",
            "@@session.sql_auto_is_null=1",
            "@@session.unique_checks=1",
            "@@session.sql_mode=1436549152",
            "@@session.auto_increment_increment=3, @@session.auto_increment_offset=2",
            "@@session.character_set_client=255",
            "@@session.collation_server=8",
            "@@session.time_zone='+02:00'",
            "@@session.collation_database=33",
            "@@session.default_collation_for_utf8mb4=255",
            "@@session.explicit_defaults_for_timestamp=1",
        ] {
            assert!(set.contains(part), "{part} missing from {set}");
        }
        // What the event does not say is left as the replaying session has it.
        let bare = Session {
            timestamp: 5,
            ..Session::default()
        };
        assert_eq!(bare.statements(quote), vec!["SET TIMESTAMP=5".to_string()]);
    }
}

//! Binlog event type codes (the byte at offset 4 of every event header) and header
//! flags, in one place for the framer, the decoder, the scanner and the replayer.

pub const QUERY: u8 = 2;
pub const INTVAR: u8 = 5;
pub const RAND: u8 = 13;
pub const USER_VAR: u8 = 14;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const XID: u8 = 16;
pub const TABLE_MAP: u8 = 19;
/// Rows events: v1 (23–25), v2 (30–32), MySQL partial update (39), MariaDB's
/// compressed ones (166–171).
pub const ROWS: &[u8] = &[23, 24, 25, 30, 31, 32, 39, 166, 167, 168, 169, 170, 171];
pub const MYSQL_GTID: u8 = 33;
pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
pub const MYSQL_PREVIOUS_GTIDS: u8 = 35;
pub const XA_PREPARE: u8 = 38;
pub const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;
pub const MYSQL_TAGGED_GTID: u8 = 42;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
/// MariaDB's START_ENCRYPTION_EVENT: everything after it is encrypted.
pub const MARIADB_START_ENCRYPTION: u8 = 164;

/// Events that open a transaction or describe the file: the only ones that matter
/// while no transaction is open.
pub fn matters_outside_transactions(kind: u8) -> bool {
    matches!(
        kind,
        FORMAT_DESCRIPTION | MYSQL_GTID | MYSQL_ANONYMOUS_GTID | MYSQL_TAGGED_GTID | MARIADB_GTID
    )
}

/// Header flag `LOG_EVENT_BINLOG_IN_USE_F`: set in an open file's first event, and
/// cleared when its checksum is computed.
pub const IN_USE: u16 = 0x1;

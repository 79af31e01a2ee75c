//! The `multiaz` commands, one module each: `run` (the sidecar), `check` (a server's
//! settings), `status`, the operator's requests (`operate`: pause, resume, ack,
//! switchover) and `binlog` (reading a binlog from disk).

pub mod binlog;
pub mod check;
pub mod operate;
pub mod run;
pub mod status;

//! The real adapters: how the driver (`multiaz-driver`) reaches the world on a host —
//! MySQL and MariaDB (`mysql`), EC2 (`ec2`), the VIP's forwarding (`forward`), the peer sidecars over sealed TCP
//! (`peers`, `auth`, `throttle`), the binlog salvage (`salvage`, `binlog_apply`), the
//! raft state on disk (`state_file`), the operator's hooks (`hooks`), and logs and
//! metrics (`telemetry`).

pub mod auth;
pub mod binlog_apply;
pub mod ec2;
pub mod forward;
pub mod hooks;
pub mod mysql;
pub mod peers;
pub mod salvage;
pub mod state_file;
pub mod telemetry;
pub mod throttle;

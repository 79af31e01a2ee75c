//! # multiaz-sim
//!
//! A deterministic simulation of a three-AZ multiaz cluster on turmoil: three database
//! hosts (a model mysqld and the real engine and driver, with simulated adapters), a
//! model EC2 API whose route tables carry the VIP, and a client per AZ writing through
//! the VIP. Each seed draws its faults; the invariants are checked on every run; the
//! same seed gives the same timeline.

pub mod hostile;
pub mod hosts;
mod inject;
pub mod mysqld;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod wire;
pub mod world;

pub use run::{run, RunConfig, RunReport};
pub use scenario::Scenario;

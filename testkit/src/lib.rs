//! # multiaz-testkit
//!
//! The one place the tests, benchmarks, examples and the simulation get their test
//! fixtures from, so that no two of them drift apart:
//!
//! - [`spec`]: three-AZ cluster descriptions;
//! - [`harness`]: an in-process cluster of engines for engine tests;
//! - [`server`]: a test server's command line, per flavour (the product's settings
//!   file, then each instance's own);
//! - [`sidecar`]: a sidecar's config file, serialized from a struct.

pub mod harness;
pub mod server;
pub mod sidecar;
pub mod spec;

//! custsync: keeps one customer list true across several SaaS providers.
//!
//! The binary (`main.rs`) only parses the command line; everything else is here:
//! configuration, the canonical model, the SQLite store, the provider connectors, the
//! sync engine, the daemon and the sandbox emulators used by tests and the demo.

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod failpoint;
pub mod metrics;
pub mod model;
pub mod providers;
pub mod sandbox;
pub mod store;
pub mod sync;

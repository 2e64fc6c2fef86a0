//! leadflow: a Kafka Streams-style processor that enriches CRM events and routes leads.
//!
//! The library holds every stage; `main.rs` only parses the command line and starts one.

pub mod cli;
pub mod codec;
pub mod gen;
pub mod kafka;
pub mod model;
pub mod registry;
pub mod topics;

/// Version string stamped on DLQ records and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! leadflow: a Kafka Streams-style processor that enriches CRM events and routes leads.
//!
//! The library holds every stage; `main.rs` only parses the command line and starts one.

pub mod backtest;
pub mod cli;
pub mod codec;
pub mod enrich;
pub mod gen;
pub mod ids;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod redact;
pub mod registry;
pub mod reset;
pub mod retry;
pub mod route;
pub mod runtime;
pub mod sink;
pub mod sla;
pub mod source;
pub mod state;
pub mod time;
pub mod topics;
pub mod topology;
pub mod trail;
pub mod validate;

/// Version string stamped on DLQ records and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

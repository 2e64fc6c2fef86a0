//! Routing stage: the Rhai sandbox, the `lead` it sees, and `rules check` / `rules test`.

pub mod compiled;
pub(crate) mod convert;
mod diagnose;
mod engine;
pub mod explain;
mod fields;
mod fixture_file;
pub mod fixtures;
pub mod lead;
pub mod live;
mod queues;
pub mod reps;
pub mod trace;

pub use engine::{CompileError, Rules, ScriptLimits};
pub use lead::*;
pub use queues::did_you_mean;

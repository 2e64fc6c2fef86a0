//! The topology file: raw serde structs, validated all at once into a [`Topology`].

mod raw;
mod validate;

pub use validate::{load, parse, Limits, Outputs, Topology, TopologyError};

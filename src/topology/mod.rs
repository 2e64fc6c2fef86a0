//! The topology file: raw serde structs, validated all at once into a [`Topology`].

mod raw;
mod validate;

pub use validate::{
    load, load_with, parse, parse_with, Escalation, EscalationStep, Guarantee, Limits, Outputs,
    Overrides, Processing, Topology, TopologyError,
};

//! Confluent wire format, the canonical schemas, Avro encode/decode and the registry client.

pub mod avro;
pub mod direct;
pub mod direct_write;
pub mod registry_client;
pub mod schemas;
pub mod wire;

pub use avro::{decode, to_json, AvroCodecError, DatumDecoder, Encoder};
pub use registry_client::{RegistryClient, RegistryError};
pub use schemas::{canonical, CanonicalSchemas, SchemaKind};
pub use wire::{frame, unframe, WireError};

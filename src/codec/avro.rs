//! Avro datum encoding and decoding with apache-avro's schema-aware serde.
//!
//! Encoding goes straight from a serde struct to bytes (no intermediate `Value`), which is
//! both faster and deterministic. Decoding resolves the writer schema (from the registry)
//! against our reader schema, so producers can evolve their schemas compatibly.

use std::collections::HashMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{from_value, Schema};
use serde::{de::DeserializeOwned, Serialize};

use super::direct::{Malformed, ReadDirect};
use super::direct_write::WriteDirect;
use super::schemas::{canonical, SchemaKind};
use super::wire::{frame, header};

/// A datum that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroCodecError {
    #[error("cannot encode {kind:?}: {source}")]
    Encode {
        kind: SchemaKind,
        source: apache_avro::Error,
    },
    #[error("cannot decode datum: {0}")]
    Decode(apache_avro::Error),
    #[error("cannot decode datum: {0}")]
    Malformed(#[from] Malformed),
}

/// Encodes values of one canonical schema into framed records for a known schema id.
pub struct Encoder {
    kind: SchemaKind,
    schema_id: u32,
    writer: GenericDatumWriter<'static>,
}

impl Encoder {
    pub fn new(kind: SchemaKind, schema_id: u32) -> Result<Self, AvroCodecError> {
        let writer = GenericDatumWriter::builder(canonical().get(kind))
            .build()
            .map_err(|source| AvroCodecError::Encode { kind, source })?;
        Ok(Encoder {
            kind,
            schema_id,
            writer,
        })
    }

    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// The bare Avro datum.
    pub fn datum<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroCodecError> {
        self.writer
            .write_ser_to_vec(value)
            .map_err(|source| AvroCodecError::Encode {
                kind: self.kind,
                source,
            })
    }

    /// The Confluent-framed value: magic byte, schema id, datum.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroCodecError> {
        Ok(frame(self.schema_id, &self.datum(value)?))
    }

    /// [`encode`](Self::encode) of a record written field by field in the canonical
    /// schema's order ([`super::direct_write`]): the same bytes, without apache-avro's
    /// per-field schema walk.
    pub fn encode_direct<T: WriteDirect>(&self, value: &T) -> Vec<u8> {
        assert_eq!(T::KIND, self.kind, "a record of another schema");
        let mut out = header(self.schema_id, 512);
        value.write_direct(&mut out);
        out
    }
}

/// Decodes a datum written with `writer` into `T`, resolved against the canonical `reader`.
pub fn decode<T: DeserializeOwned>(
    writer: &Schema,
    reader: SchemaKind,
    mut datum: &[u8],
) -> Result<T, AvroCodecError> {
    let reader_schema = canonical().get(reader);
    let value = GenericDatumReader::builder(writer)
        .reader_schema(reader_schema)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(AvroCodecError::Decode)?;
    from_value(&value).map_err(AvroCodecError::Decode)
}

/// Decodes input datums, reading straight into `T` when the writer schema is the canonical
/// one.
///
/// Most records are written with exactly our canonical schema. For those, resolving the writer
/// against the reader is the identity, so the datum is read field by field into `T`
/// ([`super::direct`]), without the per-record schema resolution of [`decode`] (which builds
/// both schemas' name tables, a `Value` tree, and walks it again). Whether a writer schema id
/// is identical (same JSON, docs and defaults included) is checked once per id; any other
/// writer takes the resolving path of [`decode`].
#[derive(Default)]
pub struct DatumDecoder {
    /// Per (writer schema id, reader kind): whether they are identical.
    identical: HashMap<(u32, SchemaKind), bool>,
}

impl DatumDecoder {
    pub fn new() -> DatumDecoder {
        DatumDecoder::default()
    }

    /// [`decode`] of an input event written with schema `id` (= `writer`): read field by
    /// field straight into `T` ([`super::direct`]) when the writer is the canonical schema.
    pub fn decode_event<T: DeserializeOwned + ReadDirect>(
        &mut self,
        id: u32,
        writer: &Schema,
        reader: SchemaKind,
        datum: &[u8],
    ) -> Result<T, AvroCodecError> {
        let same = *self
            .identical
            .entry((id, reader))
            .or_insert_with(|| identical(writer, canonical().get(reader)));
        if same {
            Ok(T::read_direct(datum)?)
        } else {
            decode(writer, reader, datum)
        }
    }
}

/// Whether two schemas are the same in every detail, documentation and defaults included.
fn identical(a: &Schema, b: &Schema) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Any framed datum as JSON, decoded with its own writer schema (for inspection tools).
pub fn to_json(writer: &Schema, mut datum: &[u8]) -> Result<serde_json::Value, AvroCodecError> {
    let value = GenericDatumReader::builder(writer)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(AvroCodecError::Decode)?;
    serde_json::Value::try_from(value).map_err(AvroCodecError::Decode)
}

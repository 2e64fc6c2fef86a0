//! Turning an input record into a canonical event, or saying why it is a poison pill.

use crate::codec::{unframe, DatumDecoder, RegistryClient, RegistryError, SchemaKind, WireError};
use crate::model::{ContactEvent, EngagementEvent, LeadAckEvent};
use crate::sink::dlq::DlqClass;

/// A decoded input event.
pub enum Input {
    Contact(ContactEvent),
    Engagement(EngagementEvent),
    Ack(LeadAckEvent),
}

/// Why a record could not be decoded.
pub enum Rejection {
    /// The record itself is bad: DLQ it with this class and message.
    Poison(DlqClass, String),
    /// The registry is unavailable or refuses us (a configuration fault): retry the same
    /// record later, never DLQ it.
    Wait(RegistryError),
}

/// Decodes `value` written for a topic of `kind`, checking size, framing, schema id and datum.
pub async fn decode_input(
    registry: &RegistryClient,
    decoder: &mut DatumDecoder,
    kind: SchemaKind,
    value: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Input, Rejection> {
    let value = value.unwrap_or_default();
    if value.len() > max_bytes {
        return Err(Rejection::Poison(
            DlqClass::Oversize,
            format!(
                "value is {} bytes, over the limit of {max_bytes}",
                value.len()
            ),
        ));
    }
    let (id, datum) = unframe(value).map_err(|e| match e {
        WireError::TooShort(_) | WireError::BadMagic(_) => {
            Rejection::Poison(DlqClass::BadMagic, e.to_string())
        }
    })?;
    let writer = match registry.cached(id) {
        Some(schema) => schema,
        None => registry.schema_by_id(id).await.map_err(|e| match e {
            e if e.should_wait() => Rejection::Wait(e),
            RegistryError::UnknownId(_) => {
                Rejection::Poison(DlqClass::UnknownSchemaId, e.to_string())
            }
            other => Rejection::Poison(DlqClass::AvroDecode, other.to_string()),
        })?,
    };
    let poison = |e: crate::codec::AvroCodecError| {
        Rejection::Poison(DlqClass::AvroDecode, format!("schema id {id}: {e}"))
    };
    Ok(match kind {
        SchemaKind::ContactEvent => Input::Contact(
            decoder
                .decode_event(id, &writer, kind, datum)
                .map_err(poison)?,
        ),
        SchemaKind::LeadAckEvent => Input::Ack(
            decoder
                .decode_event(id, &writer, kind, datum)
                .map_err(poison)?,
        ),
        _ => Input::Engagement(
            decoder
                .decode_event(id, &writer, kind, datum)
                .map_err(poison)?,
        ),
    })
}

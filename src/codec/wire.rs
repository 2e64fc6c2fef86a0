//! Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro datum.

/// First byte of every Confluent-framed value.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Why a value is not in the Confluent wire format; the record is a poison pill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("value is {0} bytes, shorter than the 5-byte Confluent header")]
    TooShort(usize),
    #[error("first byte is {0:#04x}, not the Confluent magic byte 0x00")]
    BadMagic(u8),
}

/// Prefixes `datum` with the Confluent header for `schema_id`.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = header(schema_id, datum.len());
    out.extend_from_slice(datum);
    out
}

/// The Confluent header for `schema_id`, with room for a datum of `datum_len` bytes after it.
pub fn header(schema_id: u32, datum_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum_len);
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out
}

/// Splits a framed value into its schema id and Avro datum.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < HEADER_LEN {
        // An empty or tiny value cannot be ours; a non-zero first byte says more.
        return match value.first() {
            Some(&b) if b != MAGIC => Err(WireError::BadMagic(b)),
            _ => Err(WireError::TooShort(value.len())),
        };
    }
    if value[0] != MAGIC {
        return Err(WireError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_unframe_round_trips() {
        let framed = frame(0x0102_0304, b"datum");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(unframe(&framed), Ok((0x0102_0304, &b"datum"[..])));
    }

    #[test]
    fn rejects_bad_magic_and_short_values() {
        assert_eq!(unframe(b"{\"json\":1}"), Err(WireError::BadMagic(b'{')));
        assert_eq!(unframe(&[0, 0, 1]), Err(WireError::TooShort(3)));
        assert_eq!(unframe(&[]), Err(WireError::TooShort(0)));
        assert_eq!(unframe(&[7]), Err(WireError::BadMagic(7)));
    }
}

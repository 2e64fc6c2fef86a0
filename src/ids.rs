//! Identifiers in UUID text form.

/// `bits` as a UUID string (8-4-4-4-12 lower-case hex); callers set version and variant bits.
pub fn uuid_text(bits: u128) -> String {
    let h = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_groups() {
        assert_eq!(
            super::uuid_text(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            "01234567-89ab-cdef-0011-223344556677"
        );
    }
}

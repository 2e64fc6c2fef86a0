package leadflow.twin;

import java.util.Comparator;
import java.util.Locale;

/**
 * String operations with exactly the results leadflow's Rust code (and the Rhai script) gets,
 * where Java's differ: ordering by code point (Rust compares UTF-8 bytes; Java's compareTo
 * compares UTF-16 units, which orders supplementary characters differently), trimming by the
 * Unicode White_Space property, ASCII-only lower-casing.
 */
final class RustStrings {
    private RustStrings() {}

    /** Rust's {@code str} order: by Unicode code point. */
    static final Comparator<String> ORDER = RustStrings::compare;

    static int compare(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    /** Rust's {@code char::is_whitespace}: the Unicode White_Space property. */
    static boolean isWhitespace(int c) {
        return switch (c) {
            case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F,
                    0x205F, 0x3000 -> true;
            default -> c >= 0x2000 && c <= 0x200A;
        };
    }

    /** Rust's {@code str::trim}. */
    static String trim(String s) {
        int start = 0;
        int end = s.length();
        while (start < end && isWhitespace(s.codePointAt(start))) {
            start += Character.charCount(s.codePointAt(start));
        }
        while (end > start && isWhitespace(s.codePointBefore(end))) {
            end -= Character.charCount(s.codePointBefore(end));
        }
        return s.substring(start, end);
    }

    /** Rust's {@code str::to_ascii_lowercase}. */
    static String asciiLowercase(String s) {
        StringBuilder out = null;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= 'A' && c <= 'Z') {
                if (out == null) {
                    out = new StringBuilder(s);
                }
                out.setCharAt(i, (char) (c + 32));
            }
        }
        return out == null ? s : out.toString();
    }

    /** Rhai's {@code to_lower()} (Rust's Unicode {@code to_lowercase}). */
    static String lower(String s) {
        return s.toLowerCase(Locale.ROOT);
    }

    /** Rhai's {@code to_upper()}. */
    static String upper(String s) {
        return s.toUpperCase(Locale.ROOT);
    }
}

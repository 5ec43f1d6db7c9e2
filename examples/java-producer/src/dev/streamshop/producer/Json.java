package dev.streamshop.producer;

import java.math.BigDecimal;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A tiny JSON object writer, so the example needs nothing beyond the JDK.
 *
 * <p>Strings are escaped as RFC 8259 requires: quote, backslash and every control
 * character below U+0020; U+2028/U+2029 and surrogates are written as {@code \\uXXXX}
 * too. Everything else (accents, emoji) is written as is and sent as UTF-8.
 * Numbers are integers or {@link BigDecimal}s: money never goes through a double.
 */
public final class Json {
    private final Map<String, Object> fields = new LinkedHashMap<>();

    public static Json object() {
        return new Json();
    }

    /** Adds a field; value is a String, Integer, Long, BigDecimal, Boolean, Json or null. */
    public Json put(String name, Object value) {
        fields.put(name, value);
        return this;
    }

    @Override
    public String toString() {
        StringBuilder out = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, Object> field : fields.entrySet()) {
            if (!first) {
                out.append(',');
            }
            first = false;
            quote(out, field.getKey());
            out.append(':');
            value(out, field.getValue());
        }
        return out.append('}').toString();
    }

    private static void value(StringBuilder out, Object value) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String s) {
            quote(out, s);
        } else if (value instanceof Integer || value instanceof Long || value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof BigDecimal d) {
            out.append(d.toPlainString());
        } else if (value instanceof Json j) {
            out.append(j);
        } else {
            throw new IllegalArgumentException("no JSON form for " + value.getClass());
        }
    }

    /** Writes {@code s} as a JSON string literal. */
    public static void quote(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20 || c == 0x2028 || c == 0x2029 || Character.isSurrogate(c)) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }
}

//! Value encoding: the text and JSON forms of DESIGN.md ("Value encoding").
//!
//! The forms match what a `SELECT` over the MySQL text protocol shows, so applications can
//! compare a cached value with the database directly.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::value::SqlValue;

/// The text form of a value, or `None` for NULL. Used for hash fields and key parts.
pub fn text(value: &SqlValue) -> Option<String> {
    let mut out = String::new();
    write_text(value, &mut out).then_some(out)
}

/// Appends the text form; returns false (and writes nothing) for NULL.
pub fn write_text(value: &SqlValue, out: &mut String) -> bool {
    // `write!` into a String cannot fail.
    match value {
        SqlValue::Null => return false,
        SqlValue::Int(v) => push_int(out, *v),
        SqlValue::UInt(v) | SqlValue::Bit(v) => push_int(out, *v),
        SqlValue::Float(v) => out.push_str(&float_json(*v).to_string()),
        SqlValue::Double(v) => out.push_str(&double_json(*v).to_string()),
        SqlValue::Decimal(s) | SqlValue::Text(s) | SqlValue::Enum(s) | SqlValue::Set(s) => {
            out.push_str(s)
        }
        SqlValue::Year(y) => {
            let _ = write!(out, "{y:04}");
        }
        SqlValue::Date { year, month, day } => {
            let _ = write!(out, "{year:04}-{month:02}-{day:02}");
        }
        SqlValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            precision,
        } => {
            let _ = write!(
                out,
                "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}"
            );
            write_fraction(*micros, *precision, out);
        }
        SqlValue::Time {
            negative,
            hours,
            minute,
            second,
            micros,
            precision,
        } => {
            let sign = if *negative { "-" } else { "" };
            let _ = write!(out, "{sign}{hours:02}:{minute:02}:{second:02}");
            write_fraction(*micros, *precision, out);
        }
        SqlValue::Timestamp {
            seconds,
            micros,
            precision,
        } => write_timestamp(*seconds, *micros, *precision, out),
        SqlValue::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
        SqlValue::Json(v) => out.push_str(&v.to_string()),
        SqlValue::PartialJson(v) => {
            out.push_str(&serde_json::json!({ "partial_json": v }).to_string())
        }
    }
    true
}

/// The JSON form of a value.
pub fn json(value: &SqlValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        SqlValue::Null => J::Null,
        SqlValue::Int(v) => J::from(*v),
        SqlValue::UInt(v) | SqlValue::Bit(v) => J::from(*v),
        SqlValue::Year(v) => J::from(*v),
        SqlValue::Float(v) => float_json(*v),
        SqlValue::Double(v) => double_json(*v),
        SqlValue::Json(v) => v.clone(),
        SqlValue::PartialJson(v) => serde_json::json!({ "partial_json": v }),
        other => J::String(text(other).unwrap_or_default()),
    }
}

/// Writes one value as JSON: what [`json`] gives, without building a
/// `serde_json::Value` for the common types.
pub fn write_json_value(value: &SqlValue, out: &mut String) {
    match value {
        SqlValue::Text(s) | SqlValue::Enum(s) | SqlValue::Set(s) | SqlValue::Decimal(s) => {
            push_json_str(out, s)
        }
        SqlValue::Null => out.push_str("null"),
        SqlValue::Int(v) => push_int(out, *v),
        SqlValue::UInt(v) | SqlValue::Bit(v) => push_int(out, *v),
        SqlValue::Year(v) => push_int(out, *v),
        other => {
            use std::fmt::Write as _;
            // Writing into a String cannot fail.
            let _ = write!(out, "{}", json(other));
        }
    }
}

/// Appends an integer's decimal digits. Integers are most keys' only part; `itoa` writes
/// them in a fraction of `core::fmt`'s instructions (measured with callgrind: ~180 per
/// integer through `write!`).
fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Non-zero exactly when one of the eight bytes of `x` is `"`, `\\` or a control
/// character (< 0x20): the "has zero byte" / "has byte less than" bit tricks, exact as
/// yes/no answers (bytes ≥ 0x80 never match), or-ed without branching.
fn escape_bits(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x;
    (below_space
        | zero_bytes(x ^ (ONES * u64::from(b'"')))
        | zero_bytes(x ^ (ONES * u64::from(b'\\'))))
        & HIGHS
}

/// How many bytes from the start of `bytes` need no escaping. Most text has nothing to
/// escape: it is tested sixteen bytes (two words, one branch) at a time; the block with
/// the byte to escape, and the tail, are looked up byte by byte. (Callgrind, upsert
/// catch-up: eight bytes per branch took 64 % more instructions here; a plain byte loop
/// left to the compiler to vectorise, 23 % more.)
fn plain_prefix(bytes: &[u8]) -> usize {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let mut i = 0;
    for block in bytes.chunks_exact(16) {
        let (a, b) = block.split_at(8);
        if escape_bits(word(a)) | escape_bits(word(b)) != 0 {
            break;
        }
        i += 16;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
        .unwrap_or(bytes.len() - i)
}

/// A JSON string literal, escaped exactly as serde_json escapes it (`"`, `\\`, and control
/// characters; nothing else).
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    loop {
        let plain = plain_prefix(rest.as_bytes());
        out.push_str(&rest[..plain]);
        let Some(&b) = rest.as_bytes().get(plain) else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            // Writing into a String cannot fail.
            _ => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{b:04x}"));
            }
        }
        // The escaped byte is ASCII, so the next one starts a character.
        rest = &rest[plain + 1..];
    }
    out.push('"');
}

/// Bytes JSON strings must escape: `"`, `\` and the control characters.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A FLOAT is shown with the shortest decimal that reads back as the same 32-bit value
/// (`1.1`, not `1.100000023841858`).
fn float_json(v: f32) -> serde_json::Value {
    let shortest: f64 = v.to_string().parse().unwrap_or(v as f64);
    double_json(shortest)
}

fn double_json(v: f64) -> serde_json::Value {
    // MySQL cannot store NaN or infinities; map them to null rather than panic.
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

fn write_fraction(micros: u32, precision: u8, out: &mut String) {
    if precision == 0 {
        return;
    }
    let digits = format!("{micros:06}");
    out.push('.');
    out.push_str(&digits[..usize::from(precision.min(6))]);
}

fn write_timestamp(seconds: i64, micros: u32, precision: u8, out: &mut String) {
    if seconds == 0 && micros == 0 {
        // The "zero" TIMESTAMP, as the server shows it.
        out.push_str("0000-00-00 00:00:00");
        write_fraction(0, precision, out);
        return;
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    write_fraction(micros, precision, out);
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object built as the mapper builds one (`plan::Slot`'s escaped `"name":`, then
    /// `write_json_value`), for comparing with serde_json.
    fn write_json_object<'a>(
        entries: impl Iterator<Item = (&'a str, &'a SqlValue)>,
        out: &mut String,
    ) {
        out.push('{');
        for (i, (name, value)) in entries.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, name);
            out.push(':');
            write_json_value(value, out);
        }
        out.push('}');
    }

    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn text_forms() {
        let dt = SqlValue::DateTime {
            year: 2026,
            month: 11,
            day: 23,
            hour: 10,
            minute: 0,
            second: 5,
            micros: 120_000,
            precision: 3,
        };
        assert_eq!(text(&dt).unwrap(), "2026-11-23 10:00:05.120");
        let t = SqlValue::Time {
            negative: true,
            hours: 838,
            minute: 59,
            second: 59,
            micros: 0,
            precision: 0,
        };
        assert_eq!(text(&t).unwrap(), "-838:59:59");
        assert_eq!(text(&SqlValue::Year(0)).unwrap(), "0000");
        assert_eq!(text(&SqlValue::Null), None);
        assert_eq!(text(&SqlValue::Bytes(vec![0, 255])).unwrap(), "AP8=");
        assert_eq!(text(&SqlValue::Float(1.1)).unwrap(), "1.1");
    }

    #[test]
    fn timestamps_are_utc() {
        let ts = |s, us, p| {
            text(&SqlValue::Timestamp {
                seconds: s,
                micros: us,
                precision: p,
            })
            .unwrap()
        };
        assert_eq!(ts(1_700_000_000, 123_000, 3), "2023-11-14 22:13:20.123");
        assert_eq!(ts(0, 0, 0), "0000-00-00 00:00:00");
        assert_eq!(ts(951_782_400, 0, 0), "2000-02-29 00:00:00");
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            json(&SqlValue::UInt(u64::MAX)),
            json!(18446744073709551615u64)
        );
        assert_eq!(json(&SqlValue::Decimal("12.50".into())), json!("12.50"));
        assert_eq!(json(&SqlValue::Json(json!({"a": [1]}))), json!({"a": [1]}));
        assert_eq!(json(&SqlValue::Year(2024)), json!(2024));
        let mut s = String::new();
        write_json_object(
            [
                ("id", &SqlValue::Int(1)),
                ("n\"m", &SqlValue::Text("é\n".into())),
            ]
            .into_iter(),
            &mut s,
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&s).unwrap(),
            json!({"id": 1, "n\"m": "é\n"})
        );
    }

    proptest! {
        #[test]
        fn strings_escape_as_serde_json_does(s in "\\PC*|[\\x00-\\x1f\"\\\\a-z\\u{e9}]*") {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
    }

    proptest! {
        #[test]
        fn civil_dates_round_trip_through_day_counts(days in -719_468i64..2_932_896) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            // The next day is either d+1 in the same month or the 1st of the next month.
            let (y2, m2, d2) = civil_from_days(days + 1);
            prop_assert!((y2, m2, d2) == (y, m, d + 1) || d2 == 1);
        }

        #[test]
        fn strings_are_escaped_exactly_like_serde_json(s in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn escapes_inside_long_plain_runs_are_found(
            s in "[a-z\u{e9}]{0,40}[\"\\\\\x00-\x1f\x7f]?[a-z]{0,40}[\"\\\\\x00-\x1f]?[a-z]{0,9}"
        ) {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn any_text_is_valid_json_in_objects(s in ".*") {
            let mut out = String::new();
            let v = SqlValue::Text(s.clone());
            write_json_object([("c", &v)].into_iter(), &mut out);
            let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(parsed["c"].as_str().unwrap(), s.as_str());
        }
    }
}

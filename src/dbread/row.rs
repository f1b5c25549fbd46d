//! A row read over SQL (binary protocol, session time zone UTC) turned into the same
//! [`SqlValue`]s the binlog decoder produces, so the mapper renders the very keys and
//! values the daemon wrote. The column's declared type (`information_schema`) decides.

use mysql_async::Value;

use crate::source::schema::DbColumn;
use crate::value::SqlValue;

/// Converts one column value; `column` is the table's description of it.
pub fn convert(value: Value, column: &DbColumn) -> SqlValue {
    let ty = column.column_type.as_str();
    match value {
        Value::NULL => SqlValue::Null,
        Value::Int(i) if ty.starts_with("year") => SqlValue::Year(i as u16),
        Value::Int(i) => SqlValue::Int(i),
        Value::UInt(u) => SqlValue::UInt(u),
        Value::Float(f) => SqlValue::Float(f),
        Value::Double(d) => SqlValue::Double(d),
        Value::Bytes(b) => bytes(b, column),
        Value::Date(year, month, day, hour, minute, second, micros) => {
            let precision = precision(ty);
            if ty.starts_with("datetime") {
                SqlValue::DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    micros,
                    precision,
                }
            } else if ty.starts_with("timestamp") {
                let days = days_from_civil(i64::from(year), u32::from(month), u32::from(day));
                let seconds = days * 86_400
                    + i64::from(hour) * 3600
                    + i64::from(minute) * 60
                    + i64::from(second);
                SqlValue::Timestamp {
                    seconds,
                    micros,
                    precision,
                }
            } else {
                SqlValue::Date { year, month, day }
            }
        }
        Value::Time(negative, days, hours, minute, second, micros) => SqlValue::Time {
            negative,
            hours: days * 24 + u32::from(hours),
            minute,
            second,
            micros,
            precision: precision(ty),
        },
    }
}

fn bytes(b: Vec<u8>, column: &DbColumn) -> SqlValue {
    let ty = column.column_type.as_str();
    let text = || String::from_utf8_lossy(&b).into_owned();
    if column.json || ty == "json" {
        return serde_json::from_slice(&b)
            .map(SqlValue::Json)
            .unwrap_or_else(|_| SqlValue::Text(text()));
    }
    if ty.starts_with("decimal") {
        SqlValue::Decimal(text())
    } else if ty.starts_with("bit") {
        SqlValue::Bit(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    } else if ty.starts_with("enum") {
        SqlValue::Enum(text())
    } else if ty.starts_with("set") {
        SqlValue::Set(text())
    } else if column.charset.is_some() || matches!(ty, "uuid" | "inet4" | "inet6") {
        // MariaDB's UUID and INET types come as their text form, with no charset.
        SqlValue::Text(text())
    } else {
        SqlValue::Bytes(b)
    }
}

/// Fraction digits from `datetime(6)`, `time(3)`…; 0 without parentheses.
fn precision(column_type: &str) -> u8 {
    column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(digits, _)| digits.parse().ok())
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: &str, charset: Option<&str>) -> DbColumn {
        DbColumn {
            name: "c".into(),
            column_type: ty.into(),
            charset: charset.map(str::to_string),
            json: false,
            hidden: false,
            row_end: false,
        }
    }

    #[test]
    fn declared_types_decide() {
        let ts = convert(
            Value::Date(2026, 11, 24, 8, 0, 1, 500),
            &col("timestamp(3)", None),
        );
        assert_eq!(
            ts,
            SqlValue::Timestamp {
                seconds: 1_795_507_201,
                micros: 500,
                precision: 3
            }
        );
        assert_eq!(
            convert(Value::Bytes(vec![1, 2]), &col("bit(12)", None)),
            SqlValue::Bit(258)
        );
        assert_eq!(
            convert(Value::Bytes(b"1.50".to_vec()), &col("decimal(5,2)", None)),
            SqlValue::Decimal("1.50".into())
        );
        assert_eq!(
            convert(
                Value::Bytes(b"x".to_vec()),
                &col("varchar(5)", Some("utf8mb4"))
            ),
            SqlValue::Text("x".into())
        );
        assert_eq!(
            convert(Value::Bytes(b"x".to_vec()), &col("varbinary(5)", None)),
            SqlValue::Bytes(b"x".to_vec())
        );
        assert_eq!(
            convert(Value::Time(true, 1, 2, 3, 4, 0), &col("time", None)),
            SqlValue::Time {
                negative: true,
                hours: 26,
                minute: 3,
                second: 4,
                micros: 0,
                precision: 0
            }
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}

//! MySQL binary JSON → the JSON value a `SELECT` shows. mysql_common's own conversion
//! turns DECIMALs inside documents into strings; MySQL prints them as numbers with their
//! scale (`{"price": 9.00}`), so they are kept as exact number text here (serde_json's
//! `arbitrary_precision`). Dates, times and other opaque values convert as MySQL prints
//! them (`"2012-03-18 11:30:45.000000"`, `"base64:type15:..."`), which mysql_common does.

use mysql_common::binlog::jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar};
use serde_json::Value;

pub fn to_value(dom: JsonDom) -> Value {
    match dom {
        JsonDom::Container(JsonContainer::Array(items)) => {
            Value::Array(items.into_iter().map(to_value).collect())
        }
        JsonDom::Container(JsonContainer::Object(map)) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, to_value(v))).collect())
        }
        JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(d))) => {
            let text = d.to_string();
            // Decimal text is always a valid JSON number; a string is the safe fallback.
            serde_json::from_str::<serde_json::Number>(&text)
                .map(Value::Number)
                .unwrap_or(Value::String(text))
        }
        other => Value::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::decimal::Decimal;
    use std::collections::BTreeMap;

    #[test]
    fn decimals_stay_numbers_with_their_scale() {
        let decimal: Decimal = "9.00".parse().expect("decimal");
        let dom = JsonDom::Container(JsonContainer::Object(BTreeMap::from([(
            "e".to_string(),
            JsonDom::Scalar(JsonScalar::Number(JsonNumber::Decimal(decimal))),
        )])));
        assert_eq!(to_value(dom).to_string(), r#"{"e":9.00}"#);
    }
}

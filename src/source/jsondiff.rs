//! MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`).
//!
//! A PARTIAL_UPDATE_ROWS event carries, for a JSON column, only the list of changes made
//! by `JSON_SET` / `JSON_REPLACE` / `JSON_REMOVE`. The full after value is rebuilt here by
//! applying them, in order, to the before image. A path this module cannot resolve is an
//! error: a wrong document must never reach the cache.

use mysql_common::binlog::jsondiff::{JsonDiff, JsonDiffOperation};
use serde_json::Value;

/// One step of a MySQL JSON path: `.member` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leg {
    Member(String),
    Index(usize),
}

/// Applies `diffs` to `before` and returns the after document.
pub fn apply(before: &Value, diffs: &[JsonDiff<'_>]) -> Result<Value, String> {
    let mut doc = before.clone();
    for diff in diffs {
        let path = diff.path_str();
        let legs = parse_path(&path)?;
        let value = match diff.value() {
            Some(v) => {
                let dom = v
                    .clone()
                    .parse()
                    .map_err(|e| format!("bad JSON value in partial update at {path}: {e}"))?;
                Some(super::jsonb::to_value(dom))
            }
            None => None,
        };
        apply_one(&mut doc, &legs, diff.operation(), value)
            .map_err(|e| format!("cannot apply partial JSON update at `{path}`: {e}"))?;
    }
    Ok(doc)
}

/// The change list as JSON: `[{"op": "replace", "path": "$.a", "value": 1}, …]`.
pub fn describe(diffs: &[JsonDiff<'_>]) -> Result<Value, String> {
    let mut list = Vec::with_capacity(diffs.len());
    for diff in diffs {
        let op = match diff.operation() {
            JsonDiffOperation::REPLACE => "replace",
            JsonDiffOperation::INSERT => "insert",
            JsonDiffOperation::REMOVE => "remove",
        };
        let mut entry = serde_json::Map::new();
        entry.insert("op".into(), op.into());
        entry.insert("path".into(), diff.path_str().into_owned().into());
        if let Some(v) = diff.value() {
            let dom = v
                .clone()
                .parse()
                .map_err(|e| format!("bad JSON value in partial update: {e}"))?;
            entry.insert("value".into(), super::jsonb::to_value(dom));
        }
        list.push(Value::Object(entry));
    }
    Ok(Value::Array(list))
}

fn apply_one(
    doc: &mut Value,
    legs: &[Leg],
    op: JsonDiffOperation,
    value: Option<Value>,
) -> Result<(), String> {
    let Some((last, parents)) = legs.split_last() else {
        // The whole document: only a replacement makes sense.
        return match (op, value) {
            (JsonDiffOperation::REPLACE, Some(v)) => {
                *doc = v;
                Ok(())
            }
            _ => Err("only REPLACE may target the document root".into()),
        };
    };
    let mut parent = doc;
    for leg in parents {
        parent = match (leg, parent) {
            (Leg::Member(k), Value::Object(map)) => map.get_mut(k),
            (Leg::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        }
        .ok_or("the path does not exist in the before image")?;
    }
    let need = || {
        value
            .clone()
            .ok_or_else(|| "the change carries no value".to_string())
    };
    match (op, last, parent) {
        (JsonDiffOperation::REMOVE, Leg::Member(k), Value::Object(map)) => map
            .remove(k)
            .map(drop)
            .ok_or_else(|| "member to remove is missing".into()),
        (JsonDiffOperation::REMOVE, Leg::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            Ok(())
        }
        (JsonDiffOperation::REPLACE, Leg::Member(k), Value::Object(map)) => {
            let slot = map.get_mut(k).ok_or("member to replace is missing")?;
            *slot = need()?;
            Ok(())
        }
        (JsonDiffOperation::REPLACE, Leg::Index(i), Value::Array(items)) => {
            let slot = items
                .get_mut(*i)
                .ok_or("array element to replace is missing")?;
            *slot = need()?;
            Ok(())
        }
        (JsonDiffOperation::INSERT, Leg::Member(k), Value::Object(map)) => {
            map.insert(k.clone(), need()?);
            Ok(())
        }
        (JsonDiffOperation::INSERT, Leg::Index(i), Value::Array(items)) => {
            // JSON_SET past the end appends, as MySQL does.
            let at = (*i).min(items.len());
            items.insert(at, need()?);
            Ok(())
        }
        _ => Err("the path does not match the before image".into()),
    }
}

/// Parses the paths MySQL writes in JSON diffs: `$`, `.name`, `."quoted name"`, `[n]`.
fn parse_path(path: &str) -> Result<Vec<Leg>, String> {
    let bad = |why: &str| format!("unsupported JSON path `{path}`: {why}");
    let mut rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with $"))?;
    let mut legs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed ["))?;
            let index = r[..end].trim().parse().map_err(|_| bad("array index"))?;
            legs.push(Leg::Index(index));
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix(".\"") {
            let (name, len) = quoted(r).ok_or_else(|| bad("unclosed quote"))?;
            legs.push(Leg::Member(name));
            rest = &r[len..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 || r[..end].contains('*') {
                return Err(bad("member name"));
            }
            legs.push(Leg::Member(r[..end].to_string()));
            rest = &r[end..];
        } else {
            return Err(bad("expected . or ["));
        }
    }
    Ok(legs)
}

/// Reads a double-quoted member name (after the opening quote); returns it and the number
/// of bytes consumed including the closing quote.
fn quoted(s: &str) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((name, i + 1)),
            '\\' => name.push(chars.next()?.1),
            c => name.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_paths() {
        assert_eq!(parse_path("$").expect("test input is valid"), vec![]);
        assert_eq!(
            parse_path("$.a[2].\"b c\"").expect("test input is valid"),
            vec![
                Leg::Member("a".into()),
                Leg::Index(2),
                Leg::Member("b c".into())
            ]
        );
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("$.*").is_err());
    }

    #[test]
    fn applies_each_operation() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        let path = parse_path("$.a[1]").expect("test input is valid");
        apply_one(&mut doc, &path, JsonDiffOperation::REPLACE, Some(json!(9)))
            .expect("test input is valid");
        let path = parse_path("$.b.d").expect("test input is valid");
        apply_one(&mut doc, &path, JsonDiffOperation::INSERT, Some(json!("x")))
            .expect("test input is valid");
        let path = parse_path("$.a[0]").expect("test input is valid");
        apply_one(&mut doc, &path, JsonDiffOperation::REMOVE, None).expect("test input is valid");
        assert_eq!(doc, json!({"a": [9], "b": {"c": 1, "d": "x"}}));
        let missing = parse_path("$.zz.q").expect("test input is valid");
        assert!(apply_one(
            &mut doc,
            &missing,
            JsonDiffOperation::REPLACE,
            Some(json!(1))
        )
        .is_err());
    }
}

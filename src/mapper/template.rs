//! Key templates: `user:{id}` or `order:{shop_id}:{id}` over column names.

use crate::config::ConfigError;

/// A parsed template: literal text and column placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

impl KeyTemplate {
    /// Parses a template; `key` names the config key for error messages. `{{` and `}}`
    /// stand for literal braces.
    pub fn parse(text: &str, key: &str) -> Result<KeyTemplate, ConfigError> {
        let err = |m: &str| ConfigError::invalid(key, format!("template `{text}`: {m}"));
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err(err("unclosed `{`")),
                            Some(c) => name.push(c),
                        }
                    }
                    if name.trim().is_empty() {
                        return Err(err("empty `{}` placeholder"));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Column(name));
                }
                '}' => return Err(err("`}` without a matching `{` (write `}}` for a brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let template = KeyTemplate {
            parts,
            source: text.to_string(),
        };
        if template.columns().next().is_none() {
            return Err(err(
                "names no column; every row would share one key (use `{column}`)",
            ));
        }
        Ok(template)
    }

    /// The column names the template uses, in order (with repeats).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Literal(_) => None,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the key into `out` (an empty string, possibly a spare one); `write`
    /// appends the text of a column (given as its ordinal among [`Self::columns`]) to
    /// the key and returns false when the row has no key for this template (a NULL key
    /// column). Values are written straight into the key: no string per column.
    pub fn render<E>(
        &self,
        mut out: String,
        mut write: impl FnMut(usize, &mut String) -> Result<bool, E>,
    ) -> Result<Option<String>, E> {
        debug_assert!(out.is_empty());
        out.reserve(self.source.len() + 16);
        let mut column = 0;
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Column(_) => {
                    if !write(column, &mut out)? {
                        return Ok(None);
                    }
                    column += 1;
                }
            }
        }
        Ok(Some(out))
    }

    /// The column values a key was rendered from, by matching the literal parts (a column
    /// takes the shortest text up to the next literal). `None` when the key does not fit.
    /// Used by `verify` to find the row behind a key it found in Redis.
    pub fn parse_key<'k>(&'k self, key: &'k str) -> Option<Vec<(&'k str, &'k str)>> {
        let mut rest = key;
        let mut values = Vec::new();
        let mut parts = self.parts.iter().peekable();
        while let Some(part) = parts.next() {
            match part {
                Part::Literal(l) => rest = rest.strip_prefix(l.as_str())?,
                Part::Column(c) => {
                    let end = match parts.peek() {
                        Some(Part::Literal(next)) => rest.find(next.as_str())?,
                        // Two adjacent columns cannot be told apart.
                        Some(Part::Column(_)) => return None,
                        None => rest.len(),
                    };
                    values.push((c.as_str(), &rest[..end]));
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(values)
    }

    /// Whether the template can render `key` when the placeholders whose ordinal (among
    /// [`Self::columns`]) `integer` accepts hold integers (`-?[0-9]+`) and the others any
    /// text. Every split of the key is tried, unlike [`Self::parse_key`]'s shortest match,
    /// so a text column that holds the separator cannot hide a key the rule made.
    pub fn could_render(&self, key: &str, integer: impl Fn(usize) -> bool) -> bool {
        fits(&self.parts, 0, key, &integer)
    }

    /// Every way `key` splits into column values, up to `limit` of them, the
    /// [`Self::parse_key`] one first: a text column may hold the literal that follows it
    /// (`{name}:{id}` over `a:b:5` is name `a`, id `b:5` or name `a:b`, id `5`), and only
    /// the database can say which row, if any, made the key.
    pub fn parse_keys<'k>(&'k self, key: &'k str, limit: usize) -> Vec<Vec<(&'k str, &'k str)>> {
        let mut found = Vec::new();
        splits(&self.parts, key, &mut Vec::new(), &mut found, limit);
        found
    }

    /// Whether `key` splits into column values at all ([`Self::parse_keys`]): also when
    /// the shortest match does not (`{a}:{b}:z` over `1:2:z:3:z`).
    pub fn splits_key(&self, key: &str) -> bool {
        !self.parse_keys(key, 1).is_empty()
    }

    /// How much fixed text the template has: of two templates that fit a key, the one
    /// with more is the more specific owner (`user:by-name:{n}` over `user:{id}`).
    pub fn literal_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Column(_) => 0,
            })
            .sum()
    }

    /// A key this template can produce (every column `0`): what a permission probe writes
    /// to (in a transaction it discards).
    pub fn sample(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Column(_) => out.push('0'),
            }
        }
        out
    }

    /// A Redis SCAN pattern matching every key this template can produce.
    pub fn scan_pattern(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => {
                    for c in l.chars() {
                        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
                Part::Column(_) => out.push('*'),
            }
        }
        out
    }
}

/// Depth-first over the places each column's value can end (each occurrence of the
/// literal after it, shortest first), collecting complete splits into `found`.
fn splits<'k>(
    parts: &'k [Part],
    rest: &'k str,
    values: &mut Vec<(&'k str, &'k str)>,
    found: &mut Vec<Vec<(&'k str, &'k str)>>,
    limit: usize,
) {
    if found.len() >= limit {
        return;
    }
    let Some((first, more)) = parts.split_first() else {
        if rest.is_empty() {
            found.push(values.clone());
        }
        return;
    };
    match (first, more.first()) {
        (Part::Literal(l), _) => {
            if let Some(r) = rest.strip_prefix(l.as_str()) {
                splits(more, r, values, found, limit);
            }
        }
        // Two adjacent columns cannot be told apart.
        (Part::Column(_), Some(Part::Column(_))) => {}
        (Part::Column(c), None) => {
            values.push((c, rest));
            splits(more, "", values, found, limit);
            values.pop();
        }
        (Part::Column(c), Some(Part::Literal(next))) => {
            for (end, _) in rest.match_indices(next.as_str()) {
                values.push((c, &rest[..end]));
                splits(more, &rest[end..], values, found, limit);
                values.pop();
            }
        }
    }
}

/// Backtracking match of `parts` (the first placeholder being number `column`) against
/// `rest`. Templates have a few placeholders and keys are short, so the search is small.
fn fits(parts: &[Part], column: usize, rest: &str, integer: &dyn Fn(usize) -> bool) -> bool {
    let Some((first, more)) = parts.split_first() else {
        return rest.is_empty();
    };
    match first {
        Part::Literal(l) => rest
            .strip_prefix(l.as_str())
            .is_some_and(|r| fits(more, column, r, integer)),
        Part::Column(_) if integer(column) => {
            let unsigned = rest.strip_prefix('-').unwrap_or(rest);
            let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
            let sign = rest.len() - unsigned.len();
            (1..=digits).any(|n| fits(more, column + 1, &rest[sign + n..], integer))
        }
        Part::Column(_) => (0..=rest.len())
            .filter(|&i| rest.is_char_boundary(i))
            .any(|i| fits(more, column + 1, &rest[i..], integer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_into_column_values() {
        let t = KeyTemplate::parse("order:{shop}:{id}!", "k").expect("valid");
        assert_eq!(
            t.parse_key("order:7:42!"),
            Some(vec![("shop", "7"), ("id", "42")])
        );
        assert_eq!(t.parse_key("order:7:42"), None);
        assert_eq!(t.sample(), "order:0:0!");
        assert_eq!(t.parse_key("user:7:42!"), None);
        let t = KeyTemplate::parse("u:{id}", "k").expect("valid");
        assert_eq!(t.parse_key("u:a:b"), Some(vec![("id", "a:b")]));
    }

    fn render(t: &KeyTemplate, f: &[(&str, Option<&str>)]) -> Option<String> {
        let columns: Vec<&str> = t.columns().collect();
        t.render::<()>(String::new(), |k, out| {
            let value = f
                .iter()
                .find(|(n, _)| *n == columns[k])
                .and_then(|(_, v)| *v);
            if let Some(v) = value {
                out.push_str(v);
            }
            Ok(value.is_some())
        })
        .unwrap()
    }

    #[test]
    fn a_key_splits_every_way_a_text_column_allows() {
        let t = KeyTemplate::parse("n:{name}:{id}", "k").unwrap();
        assert_eq!(
            t.parse_keys("n:a:b:5", 8),
            [
                vec![("name", "a"), ("id", "b:5")],
                vec![("name", "a:b"), ("id", "5")]
            ]
        );
        assert_eq!(
            t.parse_keys("n:a:b:5", 1),
            [t.parse_key("n:a:b:5").unwrap()]
        );
        assert!(t.parse_keys("x:a:5", 8).is_empty());
        let t = KeyTemplate::parse("{a}:{b}:z", "k").unwrap();
        assert_eq!(t.parse_key("1:2:z:3:z"), None, "the shortest match fails");
        assert!(t.splits_key("1:2:z:3:z"));
        assert_eq!(
            t.parse_keys("1:2:z:3:z", 8),
            [
                vec![("a", "1"), ("b", "2:z:3")],
                vec![("a", "1:2"), ("b", "z:3")],
                vec![("a", "1:2:z"), ("b", "3")]
            ]
        );
        let t = KeyTemplate::parse("{a}-{b}.{c}", "k").unwrap();
        assert_eq!(t.parse_keys("1-2-3.4.5", 8).len(), 4);
    }

    #[test]
    fn renders_columns_and_literals() {
        let t = KeyTemplate::parse("order:{shop}:{id}", "k").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["shop", "id"]);
        assert_eq!(
            render(&t, &[("shop", Some("3")), ("id", Some("9"))]).as_deref(),
            Some("order:3:9")
        );
        assert_eq!(render(&t, &[("shop", None), ("id", Some("9"))]), None);
        assert_eq!(t.scan_pattern(), "order:*:*");
    }

    #[test]
    fn escapes_braces() {
        let t = KeyTemplate::parse("{{x}}:{id}", "k").unwrap();
        assert_eq!(render(&t, &[("id", Some("1"))]).as_deref(), Some("{x}:1"));
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["user:{id", "user:{}", "user", "user:}id", "a{b{c}}"] {
            let e = KeyTemplate::parse(bad, "rules[0].key").unwrap_err();
            assert!(e.to_string().contains("rules[0].key"), "{bad}: {e}");
        }
    }
}

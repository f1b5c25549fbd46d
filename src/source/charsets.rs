//! How the bytes of a text column are read, from its collation id: the server's own list
//! of collations by character set when online, a table of well-known ids offline.

use std::collections::HashMap;

use super::schema::TextKind;

/// Collation ids by the name of their character set, as the server lists them
/// (`information_schema`). Empty offline, where [`charset_kind`]'s table of well-known
/// ids is all there is: MariaDB numbers its NO PAD and UCA 14 collations of every
/// character set above 255, where that table cannot tell latin1 or utf16 from UTF-8.
#[derive(Debug, Default, Clone)]
pub struct Charsets(HashMap<u16, String>);

impl Charsets {
    pub fn new(by_id: HashMap<u16, String>) -> Self {
        Charsets(by_id)
    }

    /// How text of this collation is read.
    pub fn kind(&self, collation: u16) -> TextKind {
        match self.0.get(&collation) {
            Some(name) => match charset_name_kind(Some(name)) {
                TextKind::Unsupported(_) => TextKind::Unsupported(collation),
                kind => kind,
            },
            None => charset_kind(collation),
        }
    }
}

/// Collation id (as logged in row metadata) → how to read the bytes.
pub fn charset_kind(collation: u16) -> TextKind {
    match collation {
        63 => TextKind::Binary,
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => TextKind::Latin1,
        // ucs2, utf16, utf16le, utf32 and the other non-ASCII-compatible sets.
        1
        | 4
        | 12
        | 13
        | 19
        | 24
        | 28
        | 35
        | 54..=56
        | 60..=62
        | 84..=88
        | 90
        | 95..=98
        | 101..=183 => TextKind::Unsupported(collation),
        _ => TextKind::Utf8,
    }
}

pub(super) fn charset_name_kind(name: Option<&str>) -> TextKind {
    match name {
        None | Some("binary") => TextKind::Binary,
        Some("latin1") => TextKind::Latin1,
        Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => TextKind::Utf8,
        Some(_) => TextKind::Unsupported(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collations_map_to_text_kinds() {
        assert_eq!(charset_kind(63), TextKind::Binary);
        assert_eq!(charset_kind(8), TextKind::Latin1);
        assert_eq!(charset_kind(45), TextKind::Utf8);
        assert_eq!(charset_kind(2048), TextKind::Utf8);
        assert_eq!(charset_kind(35), TextKind::Unsupported(35));
    }

    #[test]
    fn the_servers_collation_names_decide_over_the_table() {
        let charsets = Charsets::new(HashMap::from([
            (1032, "latin1".to_string()),
            (672, "utf16".to_string()),
            (608, "utf8mb4".to_string()),
            (63, "binary".to_string()),
        ]));
        assert_eq!(charsets.kind(1032), TextKind::Latin1, "latin1 NO PAD");
        assert_eq!(
            charsets.kind(672),
            TextKind::Unsupported(672),
            "utf16 UCA 14"
        );
        assert_eq!(charsets.kind(608), TextKind::Utf8);
        assert_eq!(charsets.kind(63), TextKind::Binary);
        assert_eq!(charsets.kind(8), TextKind::Latin1, "not listed: the table");
        assert_eq!(Charsets::default().kind(1032), TextKind::Utf8, "offline");
    }
}

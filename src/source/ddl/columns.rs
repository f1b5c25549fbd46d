//! `ALTER TABLE` clauses that change columns: `ADD`, `DROP`, `MODIFY`, `CHANGE` and
//! `RENAME COLUMN`. The server rewrites every row and logs only the statement, so the
//! values an `upsert` rule stored keep the old columns (or the old form of a retyped one):
//! for the rules that store those columns this is a clear, like `TRUNCATE`.
//!
//! `CONVERT TO CHARACTER SET binary` changes every text column's type (`EVERY_COLUMN`);
//! so may a conversion to another character set in a session that is not strict.
//!
//! `ALTER COLUMN … SET {VISIBLE | INVISIBLE}` changes what `SELECT *`, and so a rule
//! without a column list, stores. `ALTER COLUMN … SET DEFAULT`, index, constraint and
//! partitioning clauses change no stored value and are not reported.

use super::{Parser, Token};

/// Words that, after `ADD` or `DROP` without `COLUMN`, say the clause is about something
/// other than a column.
const NOT_COLUMNS: &[&str] = &[
    "INDEX",
    "KEY",
    "UNIQUE",
    "PRIMARY",
    "CONSTRAINT",
    "FOREIGN",
    "FULLTEXT",
    "SPATIAL",
    "VECTOR",
    "PARTITION",
    "PARTITIONING",
    "CHECK",
    "PERIOD",
    "SYSTEM",
];

impl Parser<'_> {
    /// The columns the clauses from here on add, drop, modify or rename (their names
    /// before the statement; an added column's own name).
    pub(super) fn changed_columns(&mut self) -> Vec<String> {
        // MariaDB's `ALTER TABLE t WAIT n | NOWAIT …`.
        if self.keyword("WAIT") {
            self.at += 1;
        }
        self.keyword("NOWAIT");
        let mut columns = Vec::new();
        loop {
            columns.extend(self.column_clause());
            if !self.next_item() {
                return columns;
            }
        }
    }

    fn column_clause(&mut self) -> Vec<String> {
        let Some(Token::Word(verb, _)) = self.tokens.get(self.at) else {
            return Vec::new();
        };
        self.at += 1;
        match verb.as_str() {
            "ADD" => self.added_columns(),
            "DROP" => self.column_named(NOT_COLUMNS).into_iter().collect(),
            "MODIFY" | "CHANGE" => self.column_named(&[]).into_iter().collect(),
            "RENAME" if self.keyword("COLUMN") => self.name().into_iter().collect(),
            "ALTER" => self.visibility_changed().into_iter().collect(),
            "CONVERT" if self.keyword("TO") => self.converted().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// `CONVERT TO CHARACTER SET binary`: every text column becomes a binary one, whose
    /// values are stored as base64, so every stored value changes form. To any other
    /// character set the text stays the same when the conversion is lossless, and a strict
    /// session refuses a lossy one; a session that is not strict stores `?` for each
    /// character the new set lacks (`漢字` to latin1 is `??`), so its values may change.
    fn converted(&mut self) -> Option<String> {
        if !(self.keyword("CHARSET") || (self.keyword("CHARACTER") && self.keyword("SET"))) {
            return None;
        }
        (self.keyword("BINARY") || !self.strict).then(|| crate::value::EVERY_COLUMN.to_string())
    }

    /// `ALTER [COLUMN] name SET {VISIBLE | INVISIBLE}` (MySQL 8): `SELECT *` gains or loses
    /// the column, and so do the values of a rule that stores every column. The other
    /// `ALTER COLUMN` clauses (defaults) and `ALTER INDEX` change no stored value.
    fn visibility_changed(&mut self) -> Option<String> {
        self.keyword("COLUMN");
        let name = self.name()?;
        (self.keyword("SET") && (self.keyword("VISIBLE") || self.keyword("INVISIBLE")))
            .then_some(name)
    }

    /// `[COLUMN] [IF [NOT] EXISTS] name`: the name, unless (without `COLUMN`) the next word
    /// is one of `others`.
    fn column_named(&mut self, others: &[&str]) -> Option<String> {
        if !self.keyword("COLUMN") && others.iter().any(|k| self.peek(k)) {
            return None;
        }
        self.if_not_exists();
        self.name()
    }

    /// `ADD [COLUMN] [IF NOT EXISTS] name …` or `ADD [COLUMN] (name …, name …)`.
    fn added_columns(&mut self) -> Vec<String> {
        if !self.keyword("COLUMN") && NOT_COLUMNS.iter().any(|k| self.peek(k)) {
            return Vec::new();
        }
        self.if_not_exists();
        if !self.punct('(') {
            return self.name().into_iter().collect();
        }
        let mut names = Vec::new();
        loop {
            if !NOT_COLUMNS.iter().any(|k| self.peek(k)) {
                names.extend(self.name());
            }
            if !self.next_item() {
                return names;
            }
        }
    }

    pub(super) fn if_not_exists(&mut self) {
        if self.keyword("IF") {
            self.keyword("NOT");
            self.keyword("EXISTS");
        }
    }

    fn peek(&self, k: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w, _)) if w == k)
    }

    /// Past the next comma outside nested parentheses (true); false at the end of the
    /// statement, or past the closing parenthesis of the list this is in.
    fn next_item(&mut self) -> bool {
        let mut depth = 0usize;
        while let Some(token) = self.tokens.get(self.at) {
            self.at += 1;
            match token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') if depth == 0 => return false,
                Token::Punct(')') => depth -= 1,
                Token::Punct(',') if depth == 0 => return true,
                _ => {}
            }
        }
        false
    }
}

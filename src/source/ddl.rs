//! Statements that empty a table without logging its rows. Row-based binlogs log each
//! row a `DELETE` removes, but `TRUNCATE TABLE`, `DROP TABLE`, `DROP DATABASE`,
//! `CREATE OR REPLACE TABLE`, the partition operations that drop, swap or move rows, a
//! `RENAME TABLE` that swaps another table in, and the emptying of a MEMORY table after a
//! restart are logged as the statement alone: the cache keys of those rows would stay
//! forever. This module finds the tables such a statement empties; the mapper turns them
//! into key patterns and the apply stage deletes the keys that match.
//!
//! Renames are in `rename`, with the swaps of online schema change tools it leaves alone
//! (but reports, since the tool's copy may have other columns). `ALTER TABLE` clauses that
//! change columns in every row, without logging a row, are in `columns`.

mod columns;
mod copies;
mod rename;

pub use crate::value::Emptied;
pub use copies::Copies;
use rename::is_copy_name;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word, upper-cased: a keyword or a plain name.
    Word(String, String),
    /// A quoted name (backticks, or double quotes under ANSI_QUOTES), unescaped.
    Quoted(String),
    /// Any other character outside quotes and comments (`.`, `,`, `(`, …).
    Punct(char),
    /// A single-quoted string.
    Text,
}

/// Whether the rows of one table keep their keys under another name: the same rules
/// cover both.
pub type SameKeys<'a> = &'a dyn Fn(&Emptied, &Emptied) -> bool;

/// What one statement did to tables without logging their rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The tables (or databases) it emptied, or whose columns it changed.
    pub emptied: Vec<Emptied>,
    /// An online schema change tool's copy swapped in under a table's name: `(copy,
    /// table)`. The copy holds the same rows, but an `ALTER` of the copy before the swap
    /// may have changed their columns.
    pub swapped_in: Vec<(Emptied, Emptied)>,
    /// Tables created under a name a tool gives its copy (`rename::is_copy_name`).
    pub created: Vec<Emptied>,
}

/// What `statement` does to tables without logging their rows; `default_db` is the
/// session's database, which unqualified names belong to. Nothing for most statements. A
/// table renamed to a name for which `same_keys` holds is not emptied.
pub fn effects_of(statement: &str, default_db: &str, same_keys: SameKeys<'_>) -> Effects {
    effects_under(statement, default_db, true, same_keys)
}

/// As `effects_of`, in a session whose `sql_mode` was `strict` or not: a non-strict
/// server converts a text column to a character set lacking some of its characters by
/// storing `?` for them, and logs no row of it.
pub fn effects_under(
    statement: &str,
    default_db: &str,
    strict: bool,
    same_keys: SameKeys<'_>,
) -> Effects {
    let tokens = tokenize(statement);
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        default_db,
        strict,
        same_keys,
        swapped_in: Vec::new(),
        created: Vec::new(),
    };
    let mut emptied = p.statement().unwrap_or_default();
    // Once each (`DROP TABLE t, t`; a partition dropped and truncated in one ALTER):
    // every entry is a keyspace walk.
    let mut seen = Vec::with_capacity(emptied.len());
    emptied.retain(|e| {
        let first = !seen.contains(e);
        if first {
            seen.push(e.clone());
        }
        first
    });
    Effects {
        emptied,
        swapped_in: p.swapped_in,
        created: p.created,
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    default_db: &'a str,
    /// The session refused lossy conversions (`sql_mode`).
    strict: bool,
    same_keys: SameKeys<'a>,
    swapped_in: Vec<(Emptied, Emptied)>,
    created: Vec<Emptied>,
}

impl Parser<'_> {
    fn statement(&mut self) -> Option<Vec<Emptied>> {
        match self.word()?.as_str() {
            "TRUNCATE" => {
                self.keyword("TABLE");
                Some(vec![self.table()?])
            }
            "DROP" => self.drop(),
            "DELETE" => self.delete_all(),
            "CREATE" => self.create(),
            "ALTER" => self.alter(),
            "RENAME" => self.rename(),
            _ => None,
        }
    }

    /// `DROP [TEMPORARY] TABLE[S] [IF EXISTS] t [, t]…` or `DROP {DATABASE|SCHEMA}
    /// [IF EXISTS] db`. Temporary tables never reach the binlog as rows.
    fn drop(&mut self) -> Option<Vec<Emptied>> {
        match self.word()?.as_str() {
            "TABLE" | "TABLES" => {
                self.if_exists();
                let mut tables = vec![self.table()?];
                while self.punct(',') {
                    tables.push(self.table()?);
                }
                Some(tables)
            }
            "DATABASE" | "SCHEMA" => {
                self.if_exists();
                Some(vec![Emptied::Database(self.name()?)])
            }
            _ => None,
        }
    }

    /// `DELETE FROM t` and nothing else: what MySQL 5.7 logs, even in ROW format, when a
    /// MEMORY table is first opened after a restart (later versions log TRUNCATE). Any
    /// other statement-logged DELETE is refused by the caller.
    fn delete_all(&mut self) -> Option<Vec<Emptied>> {
        if !self.keyword("FROM") {
            return None;
        }
        let table = self.table()?;
        (self.at == self.tokens.len()).then(|| vec![table])
    }

    /// `CREATE OR REPLACE TABLE t …` (MariaDB) drops the old table with its rows. A table
    /// created under an online schema change tool's name for its copy is noted
    /// (`Effects::created`).
    fn create(&mut self) -> Option<Vec<Emptied>> {
        let replace = self.keyword("OR") && self.keyword("REPLACE");
        if !self.keyword("TABLE") {
            return None; // CREATE TEMPORARY TABLE, INDEX, VIEW, …
        }
        self.if_not_exists();
        let table = self.table()?;
        if matches!(&table, Emptied::Table { table, .. } if is_copy_name(table)) {
            self.created.push(table.clone());
        }
        Some(if replace { vec![table] } else { Vec::new() })
    }

    /// `ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] t …` with `TRUNCATE PARTITION`, `DROP
    /// PARTITION`, `EXCHANGE PARTITION … WITH TABLE t2` (both tables' rows change),
    /// `IMPORT …` (a tablespace's rows replace the table's), or MariaDB's `CONVERT
    /// PARTITION p TO TABLE t2` (the partition's rows leave t) and `CONVERT TABLE t2 TO
    /// PARTITION p` (t2's rows move into t, and t2 is gone); and the columns it changes
    /// (`columns`).
    fn alter(&mut self) -> Option<Vec<Emptied>> {
        self.keyword("ONLINE");
        self.keyword("IGNORE");
        if !self.keyword("TABLE") {
            return None;
        }
        self.if_exists();
        let table = self.table()?;
        let clauses = self.at;
        let mut emptied = Vec::new();
        while self.at < self.tokens.len() {
            let Some(word) = self.word() else {
                continue;
            };
            match word.as_str() {
                "TRUNCATE" | "DROP" if self.keyword("PARTITION") => emptied.push(table.clone()),
                "RENAME" => emptied.extend(self.alter_rename(&table)?),
                "IMPORT" if self.keyword("TABLESPACE") || self.keyword("PARTITION") => {
                    emptied.push(table.clone())
                }
                "CONVERT" if self.keyword("PARTITION") => emptied.push(table.clone()),
                "CONVERT" if self.keyword("TABLE") => emptied.push(self.table()?),
                "EXCHANGE" if self.keyword("PARTITION") => {
                    emptied.push(table.clone());
                    while self.at < self.tokens.len() && !self.keyword("WITH") {
                        self.at += 1;
                    }
                    self.keyword("TABLE");
                    emptied.push(self.table()?);
                }
                _ => {}
            }
        }
        self.at = clauses;
        let columns = self.changed_columns();
        if let (false, Emptied::Table { database, table }) = (columns.is_empty(), table) {
            emptied.push(Emptied::Columns {
                database,
                table,
                columns,
            });
        }
        Some(emptied)
    }

    fn if_exists(&mut self) {
        if self.keyword("IF") {
            self.keyword("EXISTS");
        }
    }

    /// `[db.]table`, unqualified names in the default database.
    fn table(&mut self) -> Option<Emptied> {
        let first = self.name()?;
        let (database, table) = if self.punct('.') {
            (first, self.name()?)
        } else {
            (self.default_db.to_string(), first)
        };
        Some(Emptied::Table { database, table })
    }

    fn name(&mut self) -> Option<String> {
        let name = match self.tokens.get(self.at)? {
            Token::Word(_, original) => original.clone(),
            Token::Quoted(name) => name.clone(),
            _ => return None,
        };
        self.at += 1;
        Some(name)
    }

    /// The next token as an upper-cased word, consumed whatever it is.
    fn word(&mut self) -> Option<String> {
        let token = self.tokens.get(self.at)?;
        self.at += 1;
        match token {
            Token::Word(upper, _) => Some(upper.clone()),
            _ => None,
        }
    }

    /// Consumes the next token if it is the keyword `k`.
    fn keyword(&mut self, k: &str) -> bool {
        let found = matches!(self.tokens.get(self.at), Some(Token::Word(w, _)) if w == k);
        self.at += usize::from(found);
        found
    }

    fn punct(&mut self, c: char) -> bool {
        let found = self.tokens.get(self.at) == Some(&Token::Punct(c));
        self.at += usize::from(found);
        found
    }
}

/// Splits a statement into tokens. Comments are skipped, except executable ones
/// (`/*!80000 … */`, `/*M!100100 … */`), whose text the server runs.
fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        i = match c {
            c if c.is_whitespace() => i + 1,
            '/' if next == Some('*') => skip_comment(&chars, i),
            '*' if next == Some('/') => i + 2, // end of an executable comment
            '#' => line_end(&chars, i),
            '-' if next == Some('-') && chars.get(i + 2).is_none_or(|c| c.is_whitespace()) => {
                line_end(&chars, i)
            }
            '`' | '"' => {
                let (name, end) = quoted(&chars, i);
                tokens.push(Token::Quoted(name));
                end
            }
            '\'' => {
                tokens.push(Token::Text);
                quoted(&chars, i).1
            }
            c if is_name_char(c) => {
                let end = (i..chars.len())
                    .find(|&j| !is_name_char(chars[j]))
                    .unwrap_or(chars.len());
                let word: String = chars[i..end].iter().collect();
                tokens.push(Token::Word(word.to_ascii_uppercase(), word));
                end
            }
            c => {
                tokens.push(Token::Punct(c));
                i + 1
            }
        };
    }
    tokens
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Past a `/* … */` comment; only past the opening marker of an executable one.
fn skip_comment(chars: &[char], start: usize) -> usize {
    let mut i = start + 2;
    if chars.get(i) == Some(&'M') && chars.get(i + 1) == Some(&'!') {
        i += 1;
    }
    if chars.get(i) == Some(&'!') {
        i += 1;
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        return i;
    }
    (i..chars.len().saturating_sub(1))
        .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
        .map_or(chars.len(), |j| j + 2)
}

fn line_end(chars: &[char], start: usize) -> usize {
    (start..chars.len())
        .find(|&j| chars[j] == '\n')
        .unwrap_or(chars.len())
}

/// A quoted run starting at `start`, its quote doubled inside (and, in strings, escaped
/// with a backslash): the unescaped text and the index past the closing quote.
fn quoted(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote == '\'' => {
                text.extend(chars.get(i + 1));
                i += 2;
            }
            c if c == quote && chars.get(i + 1) == Some(&quote) => {
                text.push(quote);
                i += 2;
            }
            c if c == quote => return (text, i + 1),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    (text, chars.len())
}

#[cfg(test)]
mod tests;

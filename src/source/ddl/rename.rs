//! `RENAME TABLE` and `ALTER TABLE … RENAME`: the rows under a name change without a row
//! being logged. A bulk reload swaps a freshly loaded table in (`RENAME TABLE t TO t_old,
//! t_new TO t`): the new rows were logged under `t_new`, so every key of `t` would keep
//! the old table's values. A table renamed away leaves its keys behind as `DROP TABLE`
//! would. Both are clears.
//!
//! Online schema change tools swap the same way, but their copy holds the same rows (they
//! replay every change into it), and clearing then would empty the cache after every
//! migration, for good with `upsert` rules. Their tables are recognised by the names the
//! tools give them, and such a swap empties nothing; it is reported apart
//! (`Effects::swapped_in`), because the tool may have changed the copy's columns.

use super::{Emptied, Parser, SameKeys};

impl Parser<'_> {
    /// `RENAME TABLE[S] [IF EXISTS] a [WAIT n | NOWAIT] TO b [, c TO d]…`.
    pub(super) fn rename(&mut self) -> Option<Vec<Emptied>> {
        if !(self.keyword("TABLE") || self.keyword("TABLES")) {
            return None; // RENAME USER, …
        }
        self.if_exists();
        let mut moves = Vec::new();
        loop {
            let from = self.table()?;
            if self.keyword("WAIT") {
                self.at += 1;
            }
            self.keyword("NOWAIT");
            if !self.keyword("TO") {
                return None;
            }
            moves.push((from, self.table()?));
            if !self.punct(',') {
                self.swapped_in.extend(copies_moved_in(&moves));
                return Some(replaced(&moves, self.same_keys));
            }
        }
    }

    /// After `RENAME` inside `ALTER TABLE table …`: `RENAME [TO|AS] new`, not `RENAME
    /// COLUMN|INDEX|KEY`.
    pub(super) fn alter_rename(&mut self, table: &Emptied) -> Option<Vec<Emptied>> {
        if ["COLUMN", "INDEX", "KEY"].iter().any(|k| self.keyword(k)) {
            return Some(Vec::new());
        }
        let _ = self.keyword("TO") || self.keyword("AS");
        let moves = [(table.clone(), self.table()?)];
        self.swapped_in.extend(copies_moved_in(&moves));
        Some(replaced(&moves, self.same_keys))
    }
}

/// The tables whose keys the renames, applied in order, leave stale: each table that
/// existed before the statement and whose rows end up under a name its rules do not
/// cover alike. A name the statement creates held no rows, so no keys, before. Names an
/// online schema change moved are left out.
fn replaced(moves: &[(Emptied, Emptied)], same_keys: SameKeys<'_>) -> Vec<Emptied> {
    // Each table that existed, and the name its rows are under now.
    let mut rows: Vec<(&Emptied, &Emptied)> = Vec::new();
    for (from, to) in moves {
        match rows.iter_mut().find(|(_, now)| *now == from) {
            Some((_, now)) => *now = to,
            None => rows.push((from, to)),
        }
    }
    let online: Vec<&Emptied> = moves
        .iter()
        .filter(|(from, to)| schema_change_swap(from, to))
        .flat_map(|(from, to)| [from, to])
        .collect();
    rows.into_iter()
        .filter(|&(table, now)| !online.contains(&table) && now != table && !same_keys(table, now))
        .map(|(table, _)| table.clone())
        .collect()
}

/// The moves that bring an online schema change tool's copy in under its table's name.
fn copies_moved_in(moves: &[(Emptied, Emptied)]) -> Vec<(Emptied, Emptied)> {
    moves
        .iter()
        .filter(|(from, to)| match (from, to) {
            (
                Emptied::Table {
                    database: from_db,
                    table: copy,
                },
                Emptied::Table {
                    database: to_db,
                    table,
                },
            ) => from_db == to_db && is_copy_of(copy, table),
            _ => false,
        })
        .cloned()
        .collect()
}

/// Whether a table's name is one an online schema change tool gives its copy of some
/// table (`is_copy_of`).
pub(super) fn is_copy_name(name: &str) -> bool {
    let underscored = name.starts_with('_') && name.len() > "__new".len();
    (underscored && (name.ends_with("_gho") || name.ends_with("_new")))
        || name.starts_with("lhmn_")
        || name.starts_with("__osc_new_")
}

/// Whether `from → to` is a step of an online schema change: the tool's copy moving in
/// under the table's name, or the table moving out to the tool's name for the original.
fn schema_change_swap(from: &Emptied, to: &Emptied) -> bool {
    let (
        Emptied::Table {
            database: from_db,
            table: from,
        },
        Emptied::Table {
            database: to_db,
            table: to,
        },
    ) = (from, to)
    else {
        return false;
    };
    from_db == to_db && (is_copy_of(from, to) || is_old_of(to, from))
}

/// gh-ost `_t_gho`; pt-online-schema-change and Spirit `_t_new` (more leading underscores
/// when that name is taken); LHM `lhmn_t`; Facebook's OSC `__osc_new_t`.
fn is_copy_of(name: &str, table: &str) -> bool {
    name == format!("_{table}_gho")
        || underscored(name, table, "_new")
        || name == format!("lhmn_{table}")
        || name == format!("__osc_new_{table}")
}

/// gh-ost `_t_del` (or `_t_<timestamp>_del`); pt-online-schema-change and Spirit `_t_old`;
/// LHM `lhma_<timestamp>_t`; Facebook's OSC `__osc_old_t`.
fn is_old_of(name: &str, table: &str) -> bool {
    let gh_ost = name
        .strip_prefix(&format!("_{table}_"))
        .and_then(|rest| rest.strip_suffix("del"))
        .is_some_and(|stamp| stamp.is_empty() || stamp.ends_with('_') && is_stamp(stamp));
    let lhm = name
        .strip_prefix("lhma_")
        .and_then(|rest| rest.strip_suffix(&format!("_{table}")))
        .is_some_and(is_stamp);
    gh_ost || lhm || underscored(name, table, "_old") || name == format!("__osc_old_{table}")
}

/// `_t<suffix>`, `__t<suffix>`, …: pt-online-schema-change adds an underscore while the
/// name is taken (and `t` may begin with one itself).
fn underscored(name: &str, table: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix(table))
        .is_some_and(|prefix| !prefix.is_empty() && prefix.chars().all(|c| c == '_'))
}

/// A tool's timestamp in a table name: digits and underscores.
fn is_stamp(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_digit() || c == '_')
}

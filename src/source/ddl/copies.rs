//! Online schema change tools (gh-ost, pt-online-schema-change, Spirit, LHM, Facebook's
//! OSC) create a copy of a table, `ALTER` the copy, fill it, and swap it in under the
//! table's name. The copy holds the same rows, so the swap empties nothing (`rename`);
//! but when the `ALTER` changed columns, the rows under the table's name change at the
//! swap, without a row being logged. This follows the copies from their creation to
//! their swap and says what each swap changed.

use std::collections::HashMap;

use super::{Effects, Emptied};

/// The copies created since the daemon started (only names the tools give their copies,
/// so the map stays small), each with the columns its `ALTER`s changed.
#[derive(Debug, Default)]
pub struct Copies {
    altered: HashMap<(String, String), Vec<String>>,
}

impl Copies {
    /// What one statement changed for the cache: the tables it emptied or whose columns
    /// it changed, plus, for each copy it swapped in, the copy's column changes. A copy
    /// created before the start has unknown changes (`Emptied::CopySwappedIn`).
    pub fn follow(&mut self, effects: Effects) -> Vec<Emptied> {
        let mut emptied = effects.emptied;
        for (copy, table) in &effects.swapped_in {
            emptied.extend(self.swap_in(copy, table));
        }
        for table in &emptied {
            self.note(table);
        }
        for created in effects.created {
            if let Emptied::Table { database, table } = created {
                self.altered.insert((database, table), Vec::new());
            }
        }
        emptied
    }

    /// Adds a copy's column changes; forgets a dropped copy.
    fn note(&mut self, emptied: &Emptied) {
        match emptied {
            Emptied::Columns {
                database,
                table,
                columns,
            } => {
                if let Some(changed) = self.altered.get_mut(&(database.clone(), table.clone())) {
                    changed.extend(columns.iter().cloned());
                }
            }
            Emptied::Table { database, table } => {
                self.altered.remove(&(database.clone(), table.clone()));
            }
            Emptied::Database(db) => self.altered.retain(|(d, _), _| d != db),
            Emptied::CopySwappedIn { .. } => {}
        }
    }

    /// What swapping `copy` in as `table` changes: the columns altered in the copy, or
    /// nothing when none were; unknown when the copy was created before the start.
    fn swap_in(&mut self, copy: &Emptied, table: &Emptied) -> Option<Emptied> {
        let (Emptied::Table { database, table: c }, Emptied::Table { table: t, .. }) =
            (copy, table)
        else {
            return None;
        };
        let (database, table) = (database.clone(), t.clone());
        match self.altered.remove(&(database.clone(), c.clone())) {
            Some(columns) if columns.is_empty() => None,
            Some(columns) => Some(Emptied::Columns {
                database,
                table,
                columns,
            }),
            None => Some(Emptied::CopySwappedIn { database, table }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ddl::effects_of;

    fn follow(copies: &mut Copies, statement: &str) -> Vec<Emptied> {
        copies.follow(effects_of(statement, "shop", &|_, _| false))
    }

    const SWAP: &str = "RENAME TABLE t TO _t_old, _t_new TO t";

    #[test]
    fn a_copy_brings_its_column_changes_at_the_swap() {
        let mut copies = Copies::default();
        assert_eq!(follow(&mut copies, "CREATE TABLE _t_new LIKE t"), []);
        let altered = follow(&mut copies, "ALTER TABLE _t_new ADD COLUMN c INT");
        assert_eq!(altered.len(), 1, "the copy's own change: {altered:?}");
        follow(
            &mut copies,
            "ALTER TABLE _t_new DROP COLUMN d, ADD INDEX (c)",
        );
        assert_eq!(
            follow(&mut copies, SWAP),
            [Emptied::Columns {
                database: "shop".into(),
                table: "t".into(),
                columns: vec!["c".into(), "d".into()],
            }]
        );
        assert!(copies.altered.is_empty(), "forgotten once swapped in");
    }

    #[test]
    fn a_copy_without_column_changes_changes_nothing_at_the_swap() {
        let mut copies = Copies::default();
        follow(&mut copies, "CREATE TABLE _t_new LIKE t");
        follow(&mut copies, "ALTER TABLE _t_new ADD INDEX (c)");
        assert_eq!(follow(&mut copies, SWAP), []);
    }

    #[test]
    fn a_copy_created_before_the_start_has_unknown_changes() {
        let mut copies = Copies::default();
        follow(&mut copies, "ALTER TABLE _t_new ADD COLUMN c INT");
        assert_eq!(
            follow(&mut copies, SWAP),
            [Emptied::CopySwappedIn {
                database: "shop".into(),
                table: "t".into(),
            }]
        );
    }

    #[test]
    fn a_dropped_copy_is_forgotten_and_other_tables_are_not_followed() {
        let mut copies = Copies::default();
        follow(&mut copies, "CREATE TABLE _t_new LIKE t");
        follow(&mut copies, "ALTER TABLE _t_new ADD COLUMN c INT");
        follow(&mut copies, "DROP TABLE _t_new");
        follow(&mut copies, "CREATE TABLE t2 LIKE t");
        assert!(copies.altered.is_empty());
    }
}

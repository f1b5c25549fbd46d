//! Where each rule's columns sit in one table, worked out once per table instead of once
//! per row: the matching rules, the table position of every key column and written
//! column, and the JSON name (`"name":`) of each written column, escaped once.
//!
//! A cache of pure functions of (rules, table): it changes how fast `Mapper::map` runs,
//! never what it returns. A missing column is recorded as such, and reported (with the
//! row's position) only when a row needs it, as before.

use std::sync::Arc;

use super::encode;
use super::rules::{Rule, RuleSet};
use crate::value::TableInfo;

/// How many tables' plans are kept. Changes alternate between a few tables (one per
/// statement of a transaction), so one entry is too few; a table whose schema changed
/// gets a new `TableInfo`, so the old entry just ages out.
const KEPT: usize = 16;

/// One column a rule reads.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    /// Its position in the table; `None` when the table has no such column.
    pub index: Option<usize>,
    /// `"name":`, JSON-escaped.
    pub json_name: String,
}

impl Slot {
    fn new(name: &str, index: Option<usize>) -> Slot {
        let mut json_name = String::with_capacity(name.len() + 3);
        encode::push_json_str(&mut json_name, name);
        json_name.push(':');
        Slot {
            name: name.to_string(),
            index,
            json_name,
        }
    }
}

/// One matching rule, resolved against the table.
#[derive(Debug)]
pub struct RulePlan {
    /// Index into `RuleSet::rules`.
    pub rule: usize,
    /// The key template's columns, in template order.
    pub key: Vec<Slot>,
    /// The columns an upsert writes: the include list, or every column of the table.
    pub values: Vec<Slot>,
}

/// The plans of every matching rule for one table.
#[derive(Debug)]
pub struct TablePlan {
    pub table: Arc<TableInfo>,
    pub rules: Vec<RulePlan>,
}

impl TablePlan {
    fn new(rules: &RuleSet, table: &Arc<TableInfo>) -> TablePlan {
        let rules = (rules.rules.iter().enumerate())
            .filter(|(_, r)| r.matches(table.qualified()))
            .map(|(i, rule)| RulePlan::new(i, rule, table))
            .collect();
        TablePlan {
            table: table.clone(),
            rules,
        }
    }
}

impl RulePlan {
    fn new(index: usize, rule: &Rule, table: &TableInfo) -> RulePlan {
        let slot = |name: &str| Slot::new(name, table.column_index(name));
        let values = match &rule.columns {
            Some(list) => list.iter().map(|c| slot(c)).collect(),
            // What `SELECT *` shows: no invisible column.
            None => (table.columns.iter().enumerate())
                .filter(|(i, _)| !table.is_hidden(*i))
                .map(|(i, c)| Slot::new(c, Some(i)))
                .collect(),
        };
        RulePlan {
            rule: index,
            key: rule.key.columns().map(slot).collect(),
            values,
        }
    }
}

/// The last few tables' plans.
#[derive(Debug, Default)]
pub struct Plans {
    kept: Vec<TablePlan>,
}

impl Plans {
    /// The plan for `table`, worked out now if it is not kept.
    pub fn get(&mut self, rules: &RuleSet, table: &Arc<TableInfo>) -> &TablePlan {
        let found = self.kept.iter().position(|p| Arc::ptr_eq(&p.table, table));
        let at = match found {
            Some(at) => at,
            None => {
                if self.kept.len() == KEPT {
                    self.kept.remove(0);
                }
                self.kept.push(TablePlan::new(rules, table));
                self.kept.len() - 1
            }
        };
        &self.kept[at]
    }
}

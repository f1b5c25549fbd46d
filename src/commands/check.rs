//! `check`: validate the configuration, connect to both sides, and report every problem
//! that would stop or corrupt replication, each with its fix.

use crate::checkpoint::Position;
use crate::config::{redact_url, Config};
use crate::mapper::rules::{Action, RuleSet};
use crate::mapper::KeyShapes;
use crate::sink::conn::SlotRange;
use crate::sink::RedisSink;
use crate::source::catalog::Catalog;
use crate::source::{self, server};

/// Findings, in the order checked. `problems` empty means ready to run.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub ok: Vec<String>,
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
}

/// Runs every check; connection failures are reported as problems, not returned as errors,
/// so one run shows everything that is wrong.
pub async fn check(config: &Config, rules: &RuleSet, offline: bool) -> CheckReport {
    let mut report = CheckReport::default();
    report.ok.push(format!(
        "configuration valid: {} rule(s)",
        rules.rules.len()
    ));
    report.ok.extend(column_changes(rules));
    if offline {
        return report;
    }
    check_mysql(config, rules, &mut report).await;
    check_redis(config, rules, &mut report).await;
    report
}

async fn check_mysql(config: &Config, rules: &RuleSet, report: &mut CheckReport) {
    let url = redact_url(&config.source.url);
    let (mut conn, info) = match source::connect(&config.source).await {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(format!("MySQL at {url}: {e}"));
            return;
        }
    };
    report
        .ok
        .push(format!("MySQL at {url}: connected ({})", info.version));
    match server::settings(&mut conn).await {
        Ok(s) => {
            report.problems.extend(s.problems());
            report.warnings.extend(s.warnings());
        }
        Err(e) => report
            .problems
            .push(format!("reading replication settings: {e}")),
    }
    match server::missing_privileges(&mut conn).await {
        Ok(missing) if missing.is_empty() => {
            report.ok.push("replication privileges present".into())
        }
        Ok(missing) => report.problems.push(format!(
            "the MySQL user lacks: {} (GRANT them to the user in [source] url)",
            missing.join(", ")
        )),
        Err(e) => report.problems.push(format!("reading grants: {e}")),
    }
    server_id_unique(&mut conn, config.source.server_id, report).await;
    // Only what a first start at the head would meet: a daemon with a checkpoint saw
    // their PREPAREs. A user that may not list them is not told.
    if let Ok(xids) = server::prepared_xa(&mut conn).await {
        if !xids.is_empty() {
            let xids: Vec<String> = xids.iter().map(ToString::to_string).collect();
            report.warnings.push(format!(
                "XA transactions prepared on the server now: {}; a daemon starting without a \
                 checkpoint at the head (source.start = \"current\") does not see their \
                 rows and stops at their XA COMMIT: resolve them before its first start",
                xids.join(", ")
            ));
        }
    }
    let opts = match source::opts(&config.source) {
        Ok(o) => o,
        Err(e) => {
            report.problems.push(e.to_string());
            return;
        }
    };
    let mut catalog = Catalog::online(mysql_async::Pool::new(opts), info.mariadb);
    let here = Position::new("(startup)", 4);
    match catalog.check_rules(rules, &here).await {
        Ok(n) => {
            report
                .ok
                .push(format!("rule columns exist in all {n} matching table(s)"));
            report.ok.extend(namespaces(rules, &catalog.shapes()));
            report
                .warnings
                .extend(unmatched(rules, catalog.unmatched_rules()));
        }
        Err(e) => report.problems.push(e.to_string()),
    }
}

/// A warning for each rule no table matches: a misspelt name caches nothing, silently.
fn unmatched(rules: &RuleSet, indexes: &[usize]) -> Vec<String> {
    indexes
        .iter()
        .filter_map(|&i| rules.rules.iter().find(|r| r.index == i))
        .map(|r| crate::source::unmatched_rule_message(r.index, &r.table_pattern))
        .collect()
}

/// A server_id a database replica uses would have the server disconnect that replica
/// whenever the daemon connects (and the daemon when the replica reconnects).
async fn server_id_unique(conn: &mut mysql_async::Conn, server_id: u32, report: &mut CheckReport) {
    match server::replicas(conn).await {
        Ok(Ok(replicas)) => match server::replica_using(&replicas, server_id) {
            Some(r) => report.problems.push(format!(
                "source.server_id {server_id} is the server_id of the replica at {}:{} \
                 (SHOW SLAVE HOSTS): give the daemon a server_id no replica uses",
                r.host, r.port
            )),
            None => report.ok.push(format!(
                "source.server_id {server_id} is free: no replica of the server uses it \
                 ({} registered)",
                replicas.iter().filter(|r| r.is_database_replica()).count()
            )),
        },
        Ok(Err(refusal)) => report.warnings.push(format!(
            "the server's replicas cannot be listed ({refusal}; MariaDB's SHOW SLAVE HOSTS \
             needs REPLICATION MASTER ADMIN), so source.server_id {server_id} is not checked \
             against them: make sure no replica uses it, or grant the privilege"
        )),
        Err(e) => report
            .problems
            .push(format!("listing the server's replicas: {e}")),
    }
}

/// Which keys under each rule's pattern count as the rule's (`mapper::shapes`): an
/// operator sharing a prefix with another application learns what a clear would delete.
fn namespaces(rules: &RuleSet, shapes: &KeyShapes) -> Vec<String> {
    rules
        .rules
        .iter()
        .map(|rule| {
            let template = rule.key.as_str();
            let pattern = rule.key.scan_pattern();
            match shapes.integer_columns(rules, rule.index).as_slice() {
                [] => format!(
                    "rules[{}] `{template}`: every key matching `{pattern}` counts as the \
                     rule's (a table clear deletes it); give other keys another prefix",
                    rule.index
                ),
                integers => format!(
                    "rules[{}] `{template}`: {} {} in every matching table, so keys \
                     matching `{pattern}` with other text there are left to their owners",
                    rule.index,
                    integers
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if integers.len() == 1 {
                        "is an integer"
                    } else {
                        "are integers"
                    }
                ),
            }
        })
        .collect()
}

async fn check_redis(config: &Config, rules: &RuleSet, report: &mut CheckReport) {
    let url = match &config.redis.sentinel {
        None => redact_url(&config.redis.url),
        Some(s) => format!("the primary Sentinel names for `{}`", s.master_name),
    };
    match RedisSink::connect(&config.redis, &config.checkpoint.key).await {
        Ok(mut sink) => {
            // With Sentinel, say which node that is.
            let url = match sink.primary_url() {
                Some(primary) => format!("{url}, {}", redact_url(primary)),
                None => url,
            };
            report.warnings.extend(sink.eviction_warning().await);
            redis_limits(&sink, config, report);
            match sink.cluster_layout().await {
                Ok(Some(ranges)) => cluster_layout(&ranges, config, report),
                Ok(None) => {}
                Err(e) => report.problems.push(format!("Redis Cluster layout: {e}")),
            }
            check_sink(sink, config, rules, &url, report).await;
        }
        Err(e) => report.problems.push(format!("Redis at {url}: {e}")),
    }
}

/// What Redis takes from one client, against `sink.max_bytes_per_step`; or, when the
/// user may not read it, that the daemon assumes Redis's defaults.
fn redis_limits(sink: &RedisSink, config: &Config, report: &mut CheckReport) {
    let limits = sink.limits();
    if let Some(why) = sink.limits_unread() {
        report.warnings.push(format!(
            "Redis's limits on a client's input could not be read ({why}): the daemon \
             assumes Redis's defaults. If the server's proto-max-bulk-len or \
             client-query-buffer-limit is lower, a value or step over it makes Redis drop \
             the connection and the daemon retry it for ever; grant the user \
             `+config|get` (which also shows the server's passwords) or keep \
             sink.max_bytes_per_step under half of client-query-buffer-limit"
        ));
        return;
    }
    let configured = config.sink.max_bytes_per_step;
    report
        .ok
        .push(format!("Redis limits: {}", limits.describe(configured)));
    if configured > limits.step_bytes() {
        report.warnings.push(format!(
            "sink.max_bytes_per_step = {configured} is more than half of Redis's \
             client-query-buffer-limit ({}), which newer Redis versions apply to the \
             commands a MULTI queues: the daemon makes its steps {} bytes at most",
            limits.query_buffer,
            limits.step_bytes()
        ));
    }
}

/// A Redis Cluster's primaries and replicas, against `redis.wait_replicas`.
fn cluster_layout(ranges: &[SlotRange], config: &Config, report: &mut CheckReport) {
    let mut primaries: Vec<&(String, u16)> = ranges.iter().map(|r| &r.node).collect();
    primaries.sort();
    primaries.dedup();
    let slots: usize = ranges
        .iter()
        .map(|r| usize::from(r.last - r.first) + 1)
        .sum();
    let replicas = ranges.iter().map(|r| r.replicas).min().unwrap_or(0);
    report.ok.push(format!(
        "Redis Cluster: {} primaries serving {slots} of 16384 slots, each with at least \
         {replicas} replica(s)",
        primaries.len()
    ));
    if slots < 16384 {
        report.warnings.push(format!(
            "Redis Cluster: {} slots have no primary; keys in them cannot be written",
            16384 - slots
        ));
    }
    let wanted = config.redis.wait_replicas as usize;
    if wanted > replicas {
        report.problems.push(format!(
            "redis.wait_replicas = {wanted} but a primary has {replicas} replica(s): every \
             step would wait redis.wait_timeout_ms and fail; lower it or add replicas"
        ));
    } else if wanted == 0 && replicas > 0 {
        report.warnings.push(
            "Redis Cluster primaries have replicas but redis.wait_replicas = 0: a primary \
             that fails over before its replica got a step's writes loses them while the \
             checkpoint (on another node) says they are applied; set redis.wait_replicas = 1"
                .into(),
        );
    }
}

/// On a connected Redis: the write permission probe, then the checkpoint.
async fn check_sink(
    mut sink: RedisSink,
    config: &Config,
    rules: &RuleSet,
    url: &str,
    report: &mut CheckReport,
) {
    match sink
        .probe_writes(rules)
        .await
        .and(sink.load_checkpoint().await)
    {
        Ok(Some(cp)) => report.ok.push(format!(
            "Redis at {url}: connected; checkpoint {} ({})",
            cp.position, cp.server
        )),
        Ok(None) => report.ok.push(format!(
            "Redis at {url}: connected; no checkpoint yet (start policy `{}`)",
            config.source.start
        )),
        Err(e) => report.problems.push(format!("Redis at {url}: {e}")),
    }
}

/// What a column change does to each `upsert` rule's keys (`source::ddl::columns`): an
/// operator planning an `ALTER TABLE` learns which cached values it will delete.
fn column_changes(rules: &RuleSet) -> Vec<String> {
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rules
        .rules
        .iter()
        .filter(|rule| matches!(rule.action, Action::Upsert(_)))
        .map(|rule| {
            let template = rule.key.as_str();
            match &rule.columns {
                None => format!(
                    "rules[{}] `{template}` stores every column: an ALTER TABLE that adds, \
                     drops, renames or retypes a column of a matching table deletes its keys \
                     (list `columns` to keep them through added columns)",
                    rule.index
                ),
                Some(_) => format!(
                    "rules[{}] `{template}` uses {}: an ALTER TABLE that drops, renames or \
                     retypes one of them deletes its keys",
                    rule.index,
                    quoted(&mut rule.required_columns())
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    #[test]
    fn each_upsert_rule_says_which_column_changes_delete_its_keys() {
        let rule = |action: &str, key: &str, columns: Option<Vec<String>>| RuleConfig {
            table: "shop.items".into(),
            action: action.into(),
            key: key.into(),
            format: None,
            columns,
            ttl_secs: None,
            accept_unlogged_cascades: false,
        };
        let rules = RuleSet::compile(&[
            rule("upsert", "item:{id}", None),
            rule("delete", "gone:{id}", None),
            rule("upsert", "name:{id}", Some(vec!["name".into()])),
        ])
        .expect("valid rules");
        let lines = column_changes(&rules);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("rules[0] `item:{id}` stores every column"));
        assert!(lines[1].starts_with("rules[2] `name:{id}` uses `id`, `name`:"));
    }
}

//! The write permission probe: before the first step, every command a step may send is
//! queued for a key of every rule inside a `MULTI` that is then discarded. Redis checks a
//! user's ACL when a command is queued, so a rule key or command the user may not write
//! shows up at start-up (and in `check`), not as a refused step later; and nothing is
//! written.

use redis::{Pipeline, Value};

use super::SinkError;
use crate::mapper::rules::{Action, Format, Rule, RuleSet};

/// One probed command: the rule, the key, the command's name.
struct Probe {
    rule: usize,
    key: String,
    command: &'static str,
}

/// The commands a step may send for `rule`'s keys (see `transaction::push_run`). Every
/// rule may delete: a row deleted under an upsert rule deletes its key. Every rule may
/// SCAN for its keys: after a statement emptied its table (`mapper::clear`).
fn commands(rule: &Rule) -> &'static [&'static str] {
    match (&rule.action, rule.ttl_ms) {
        (Action::Delete, _) => &["DEL", "SCAN"],
        (Action::Upsert(Format::Json), 0) => &["DEL", "SET", "MSET", "SCAN"],
        (Action::Upsert(Format::Json), _) => &["DEL", "SET", "SCAN"],
        (Action::Upsert(Format::Hash), 0) => &["DEL", "HSET", "SCAN"],
        (Action::Upsert(Format::Hash), _) => &["DEL", "HSET", "PEXPIRE", "SCAN"],
    }
}

fn probes(rules: &RuleSet) -> Vec<Probe> {
    rules
        .rules
        .iter()
        .flat_map(|rule| {
            let key = rule.key.sample();
            commands(rule).iter().map(move |&command| Probe {
                rule: rule.index,
                key: key.clone(),
                command,
            })
        })
        .collect()
}

/// `MULTI`, each probe, `DISCARD`, as one request: all of it goes to one connection, so
/// the probes are always inside the `MULTI` (sent as two requests, a reconnection between
/// them would have them run for real). The user's right to `MULTI` was checked just before
/// on the same connection (`check_scripting`).
pub fn build(rules: &RuleSet) -> (Pipeline, usize) {
    let probes = probes(rules);
    let mut p = redis::pipe();
    p.cmd("MULTI");
    for probe in &probes {
        if probe.command == "SCAN" {
            p.cmd("SCAN")
                .arg(0)
                .arg("MATCH")
                .arg(&probe.key)
                .arg("COUNT")
                .arg(1);
            continue;
        }
        p.cmd(probe.command).arg(&probe.key);
        match probe.command {
            "SET" | "MSET" => p.arg(""),
            "HSET" => p.arg("f").arg(""),
            "PEXPIRE" => p.arg(1),
            _ => &mut p,
        };
    }
    p.cmd("DISCARD");
    (p, probes.len() + 2)
}

/// The first probe Redis refused to queue, as an error naming the rule, key and command.
pub fn verdict(rules: &RuleSet, replies: &[Value]) -> Result<(), SinkError> {
    let Some((multi, queued)) = replies.split_first() else {
        return Err(SinkError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "no reply to the write permission probe",
        ))));
    };
    if let Value::ServerError(e) = multi {
        return Err(SinkError::Redis(e.clone().into()));
    }
    for (probe, reply) in probes(rules).iter().zip(queued) {
        if let Value::ServerError(e) = reply {
            let e: redis::RedisError = e.clone().into();
            if !super::transaction::is_no_perm(&e) {
                return Err(SinkError::Redis(e));
            }
            return Err(SinkError::WriteNotAllowed {
                rule: probe.rule,
                key: probe.key.clone(),
                command: probe.command,
                detail: e.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn rule(table: &str, action: &str, key: &str, format: Option<&str>, ttl: i64) -> RuleConfig {
        RuleConfig {
            table: table.into(),
            action: action.into(),
            key: key.into(),
            format: format.map(str::to_string),
            columns: None,
            ttl_secs: (ttl > 0).then_some(ttl),
            accept_unlogged_cascades: false,
        }
    }

    #[test]
    fn each_rule_is_probed_with_the_commands_its_steps_send() {
        let set = RuleSet::compile(&[
            rule("a.t", "delete", "a:{id}", None, 0),
            rule("b.t", "upsert", "b:{id}:{k}", Some("hash"), 5),
        ])
        .expect("rules");
        let got: Vec<(usize, String, &str)> = probes(&set)
            .into_iter()
            .map(|p| (p.rule, p.key, p.command))
            .collect();
        assert_eq!(
            got,
            [
                (0, "a:0".to_string(), "DEL"),
                (0, "a:0".to_string(), "SCAN"),
                (1, "b:0:0".to_string(), "DEL"),
                (1, "b:0:0".to_string(), "HSET"),
                (1, "b:0:0".to_string(), "PEXPIRE"),
                (1, "b:0:0".to_string(), "SCAN"),
            ]
        );
        let (pipe, replies) = build(&set);
        assert_eq!(replies, 8);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).expect("utf-8");
        assert!(
            packed.starts_with(
                "*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nDEL\r\n$3\r\na:0\r\n\
                 *6\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$3\r\na:0\r\n"
            ),
            "{packed}"
        );
        assert!(packed.ends_with("*1\r\n$7\r\nDISCARD\r\n"), "{packed}");
    }

    #[test]
    fn a_refused_probe_names_its_rule_key_and_command() {
        let set = RuleSet::compile(&[
            rule("a.t", "delete", "a:{id}", None, 0),
            rule("b.t", "upsert", "b:{id}", None, 0),
        ])
        .expect("rules");
        let reply = |raw: &str| redis::parse_redis_value(raw.as_bytes()).expect("RESP");
        let ok = [
            "+OK\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+QUEUED\r\n",
            "+OK\r\n",
        ];
        assert!(verdict(&set, &ok.map(reply)).is_ok());
        let mut refused = ok.map(reply);
        // The fourth probe (after MULTI's reply): SET on rules[1]'s key.
        refused[4] = reply("-NOPERM this user has no permissions to access one of the keys\r\n");
        let e = verdict(&set, &refused).expect_err("refused");
        let text = e.to_string();
        assert!(e.is_definite(), "{text}");
        assert!(
            text.contains("rules[1]") && text.contains("`b:0`") && text.contains("run SET on"),
            "{text}"
        );
        // A refused MULTI: never a success.
        let mut no_multi = ok.map(reply);
        no_multi[0] = reply("-NOPERM no MULTI for you\r\n");
        assert!(verdict(&set, &no_multi).is_err());
    }
}

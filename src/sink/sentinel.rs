//! Finding the Redis primary through Redis Sentinel, the way Sentinel's client guide asks:
//! the Sentinels are asked in order for the primary of `master_name`, and the node named
//! is asked for its `ROLE`, since during a failover a Sentinel may still name the old one.
//!
//! It runs at every connect, and a session ends when the Sentinels name another primary
//! (`moved`), so after a failover the next session writes to the new primary. That
//! session resumes from the checkpoint it finds there: replication is asynchronous and a
//! step the old primary had not passed on is lost with it, but the checkpoint went in the
//! same MULTI/EXEC, so it is lost too and the step is applied again.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tracing::info;

use super::{node_client, SinkError};
use crate::config::{redact_url, RedisConfig, SentinelConfig};

/// A Sentinel or a node that does not answer within this is skipped: the next is asked.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How often a session asks the Sentinels whether its primary is still the primary.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The primary a session writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub address: (String, u16),
    /// `redis.url` with the primary's host and port.
    pub url: String,
}

/// The primary the Sentinels name, once that node has said it is a primary.
pub async fn primary(redis: &RedisConfig, sentinel: &SentinelConfig) -> Result<Primary, SinkError> {
    let master = &sentinel.master_name;
    let mut answers = Vec::new();
    let mut unknown = 0;
    let mut refused = false;
    for node in &sentinel.nodes {
        let shown = redact_url(node);
        match ask_node(node, redis, master).await {
            Ok(Some((host, port))) => return verified(redis, master, &shown, host, port).await,
            Ok(None) => {
                unknown += 1;
                answers.push(format!("{shown} does not monitor it"));
            }
            Err(e) => {
                // Not a Sentinel, or a wrong password: no retry makes that answer.
                refused |= e.is_definite();
                answers.push(format!("{shown}: {e}"));
            }
        }
    }
    let detail = answers.join("; ");
    // Every Sentinel that answered said it has no such name: that is the configuration,
    // not a passing state (a failover keeps the name).
    if unknown > 0 {
        return Err(SinkError::UnknownMaster {
            master: master.clone(),
            detail,
        });
    }
    if refused {
        return Err(SinkError::SentinelRefused { detail });
    }
    Err(no_primary(master, false, detail))
}

/// The primary a Sentinel (`shown`) named at `host:port`, once it says it is one.
async fn verified(
    redis: &RedisConfig,
    master: &str,
    shown: &str,
    host: String,
    port: u16,
) -> Result<Primary, SinkError> {
    let url = with_address(&redis.url, &host, port)?;
    match is_primary(redis, &url).await {
        Ok(true) => {
            info!(sentinel = %shown, primary = %format!("{host}:{port}"), master = %master, "Sentinel named the primary");
            Ok(Primary {
                address: (host, port),
                url,
            })
        }
        Ok(false) => Err(no_primary(
            master,
            true,
            format!("{shown} names {host}:{port}, which is a replica: a failover is under way"),
        )),
        // A refused password is the configuration's, as without Sentinel.
        Err(e) if e.is_definite() => Err(e),
        Err(e) => Err(no_primary(
            master,
            true,
            format!("{shown} names {host}:{port}, which does not answer: {e}"),
        )),
    }
}

/// Resolves once the Sentinels name a primary other than `current`. A session must end
/// then, even while `current` still takes writes: Sentinel demotes an old primary only
/// when it next sees it, and what it takes meanwhile is lost when it resyncs. Sentinel
/// announces a switch the moment it makes it; asking every second covers an announcement
/// missed while no Sentinel could be listened to.
pub async fn moved(redis: RedisConfig, current: Primary) -> SinkError {
    let Some(sentinel) = &redis.sentinel else {
        return std::future::pending().await;
    };
    tokio::select! {
        e = announced(&redis, sentinel, &current) => e,
        e = asked(&redis, sentinel, &current) => e,
    }
}

/// Listens to a Sentinel's `+switch-master` channel, the next Sentinel when one goes away.
async fn announced(redis: &RedisConfig, sentinel: &SentinelConfig, current: &Primary) -> SinkError {
    loop {
        for node in &sentinel.nodes {
            let Ok(client) = node_client(node, &redis.tls()) else {
                continue;
            };
            let Ok(Ok(mut pubsub)) = tokio::time::timeout(TIMEOUT, client.get_async_pubsub()).await
            else {
                continue;
            };
            if pubsub.subscribe("+switch-master").await.is_err() {
                continue;
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some(e) = switch(&text, &sentinel.master_name, current) {
                    return e;
                }
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// The move a `+switch-master` announcement (`<name> <old host> <old port> <new host>
/// <new port>`) makes away from `current`, if it is about this primary.
fn switch(text: &str, master: &str, current: &Primary) -> Option<SinkError> {
    let [name, old_host, old_port, host, port] = text.split_whitespace().collect::<Vec<_>>()[..]
    else {
        return None;
    };
    let to = (host.to_string(), port.parse().ok()?);
    (name == master && to != current.address).then(|| SinkError::PrimaryMoved {
        master: master.to_string(),
        from: format!("{old_host}:{old_port}"),
        to: format!("{host}:{port}"),
    })
}

/// Asks the Sentinels, in order, every `WATCH_INTERVAL`. A Sentinel that cannot be asked
/// is skipped; none answering is not a move.
async fn asked(redis: &RedisConfig, sentinel: &SentinelConfig, current: &Primary) -> SinkError {
    let master = &sentinel.master_name;
    let mut conn: Option<(usize, MultiplexedConnection)> = None;
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        for (i, node) in sentinel.nodes.iter().enumerate() {
            if conn.as_ref().map(|(at, _)| *at) != Some(i) {
                conn = connect(node, redis).await.ok().map(|c| (i, c));
            }
            let Some((_, c)) = conn.as_mut() else {
                continue;
            };
            match ask(c, master).await {
                Ok(Some(named)) if named != current.address => {
                    return SinkError::PrimaryMoved {
                        master: master.clone(),
                        from: format!("{}:{}", current.address.0, current.address.1),
                        to: format!("{}:{}", named.0, named.1),
                    };
                }
                Ok(Some(_)) => break,
                Ok(None) | Err(_) => conn = None,
            }
        }
    }
}

/// `failover`: a Sentinel named a node that is not (or no longer) a working primary.
fn no_primary(master: &str, failover: bool, detail: String) -> SinkError {
    SinkError::NoPrimary {
        master: master.to_string(),
        failover,
        detail,
    }
}

async fn connect(url: &str, redis: &RedisConfig) -> Result<MultiplexedConnection, SinkError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let client = node_client(url, &redis.tls())?;
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

async fn ask_node(
    node: &str,
    redis: &RedisConfig,
    master: &str,
) -> Result<Option<(String, u16)>, SinkError> {
    ask(&mut connect(node, redis).await?, master).await
}

/// The primary's host and port as this Sentinel knows them; `None` when it monitors no
/// primary of that name.
async fn ask(
    conn: &mut MultiplexedConnection,
    master: &str,
) -> Result<Option<(String, u16)>, SinkError> {
    let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(master)
        .query_async(conn)
        .await?;
    Ok(reply)
}

/// Whether the node at `url` says it is a primary. A user not allowed `ROLE` cannot
/// tell; it is taken as a primary, since a replica refuses every step (READONLY) anyway
/// and the session ends there.
async fn is_primary(redis: &RedisConfig, url: &str) -> Result<bool, SinkError> {
    let mut conn = connect(url, redis).await?;
    let role: Result<Vec<redis::Value>, _> = redis::cmd("ROLE").query_async(&mut conn).await;
    match role {
        Ok(values) => {
            let first = values.first().map(redis::from_redis_value_ref::<String>);
            Ok(matches!(first, Some(Ok(role)) if role == "master"))
        }
        Err(e) if e.code() == Some("NOPERM") => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// `url` with another host and port; user, password, database and scheme stay.
fn with_address(url: &str, host: &str, port: u16) -> Result<String, SinkError> {
    let invalid = |what: &str| {
        SinkError::Redis(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "Sentinel named a primary that cannot be put into redis.url",
            format!("{host}:{port}: {what}"),
        )))
    };
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    // An IPv6 address goes into a URL in brackets.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    parsed
        .set_host(Some(&host))
        .map_err(|e| invalid(&e.to_string()))?;
    parsed
        .set_port(Some(port))
        .map_err(|()| invalid("the URL takes no port"))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_announcement_moves_only_its_own_primary_away() {
        let current = Primary {
            address: ("10.0.0.5".into(), 6379),
            url: "redis://10.0.0.5:6379/0".into(),
        };
        let moved = switch("cache 10.0.0.5 6379 10.0.0.6 6380", "cache", &current);
        assert!(
            matches!(&moved, Some(SinkError::PrimaryMoved { from, to, .. })
                if from == "10.0.0.5:6379" && to == "10.0.0.6:6380"),
            "{moved:?}"
        );
        assert!(switch("other 10.0.0.5 6379 10.0.0.6 6380", "cache", &current).is_none());
        assert!(
            switch("cache 10.0.0.4 6379 10.0.0.5 6379", "cache", &current).is_none(),
            "a switch to the primary in use already happened"
        );
        assert!(switch("cache 10.0.0.5 6379", "cache", &current).is_none());
    }

    #[test]
    fn the_primary_replaces_only_host_and_port() {
        let url = with_address("rediss://cdc:pw@sentinel-managed:6379/3", "10.0.0.7", 6380)
            .expect("valid");
        assert_eq!(url, "rediss://cdc:pw@10.0.0.7:6380/3");
        let url = with_address("redis://x/0", "fd00::7", 6379).expect("valid");
        assert_eq!(url, "redis://[fd00::7]:6379/0");
    }
}

//! Questions asked of the server over plain SQL: head position, binlog list, identity,
//! replication settings and privileges.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::checkpoint::{file_index, Position, ServerIdentity};
use crate::source::SourceError;

/// What kind of server this is, which decides a few statement spellings.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub mariadb: bool,
    /// MySQL with `gtid_mode=ON`: every transaction has a GTID, so checkpoints can too.
    pub mysql_gtids: bool,
    pub identity: ServerIdentity,
}

pub async fn info(conn: &mut Conn) -> Result<ServerInfo, SourceError> {
    let (version, server_id, hostname): (String, u32, String) = conn
        .query_first("SELECT VERSION(), @@server_id, @@hostname")
        .await?
        .ok_or_else(|| SourceError::Setting("SELECT VERSION() returned nothing".into()))?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let uuid_or_host = if mariadb {
        hostname
    } else {
        conn.query_first::<String, _>("SELECT @@server_uuid")
            .await?
            .unwrap_or(hostname)
    };
    let mysql_gtids = !mariadb && mysql_gtid_mode(conn).await?.as_deref() == Some("ON");
    Ok(ServerInfo {
        version,
        mariadb,
        mysql_gtids,
        identity: ServerIdentity {
            server_id,
            uuid_or_host,
        },
    })
}

/// MySQL's `@@GLOBAL.gtid_mode`; `None` on servers without it (before 5.6).
async fn mysql_gtid_mode(conn: &mut Conn) -> Result<Option<String>, SourceError> {
    match conn.query_first("SELECT @@GLOBAL.gtid_mode").await {
        Ok(mode) => Ok(mode),
        Err(mysql_async::Error::Server(s)) if s.code == 1193 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The statement that reports the binlog head: MySQL 8.2+ renamed it, 8.4 removed the
/// old spelling.
fn status_statement(conn: &Conn, mariadb: bool) -> &'static str {
    if !mariadb && conn.server_version() >= (8, 2, 0) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    }
}

/// The server's current write position.
pub async fn head(conn: &mut Conn, server: &ServerInfo) -> Result<Position, SourceError> {
    let statement = status_statement(conn, server.mariadb);
    let row: Option<Row> = conn.query_first(statement).await?;
    let row = row.ok_or_else(|| {
        SourceError::Setting(format!(
            "{statement} returned nothing: binary logging is off (start the server with \
             log_bin)"
        ))
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    Ok(Position::new(file, pos))
}

/// The databases the server logs changes of: `binlog_do_db` (empty: all) and
/// `binlog_ignore_db`, as the binlog status reports them. Nothing when logging is off.
pub async fn binlog_filters(
    conn: &mut Conn,
    mariadb: bool,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let statement = status_statement(conn, mariadb);
    let Some(row): Option<Row> = conn.query_first(statement).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let list = |i: usize| -> Vec<String> {
        let text: String = row.get(i).unwrap_or_default();
        text.split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect()
    };
    Ok((list(2), list(3)))
}

/// `SHOW BINARY LOGS`: (file, size) from oldest to newest.
pub async fn binlogs(conn: &mut Conn) -> Result<Vec<(String, u64)>, SourceError> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| match e {
        mysql_async::Error::Server(ref s) if s.code == 1381 => SourceError::Setting(
            "binary logging is off; start the server with log_bin and binlog_format=ROW".into(),
        ),
        other => other.into(),
    })?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0).unwrap_or_default(), r.get(1).unwrap_or_default()))
        .collect())
}

/// Checks that `position` can be streamed from: its file still exists and the offset is not
/// beyond it. Fails closed with the error that says what to do.
pub fn check_position(
    position: &Position,
    logs: &[(String, u64)],
    head: &Position,
) -> Result<(), SourceError> {
    let oldest = logs.first().map(|(f, _)| f.clone()).unwrap_or_default();
    match logs.iter().find(|(f, _)| *f == position.file) {
        Some((_, size)) if position.pos <= *size || position <= head => Ok(()),
        Some(_) => Err(SourceError::AheadOfHead {
            requested: position.clone(),
            head: head.clone(),
        }),
        None if position > head && file_index(&position.file).is_some() => {
            Err(SourceError::AheadOfHead {
                requested: position.clone(),
                head: head.clone(),
            })
        }
        None => Err(SourceError::Purged {
            checkpoint: position.clone(),
            oldest,
        }),
    }
}

/// Replication settings as the server reports them; `None` where the server has no such
/// variable (older versions).
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: Option<String>,
}

pub async fn settings(conn: &mut Conn) -> Result<Settings, SourceError> {
    let (log_bin, format, image): (i64, String, String) = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        .await?
        .ok_or_else(|| SourceError::Setting("cannot read replication settings".into()))?;
    let metadata: Option<String> = match conn.query_first("SELECT @@binlog_row_metadata").await {
        Ok(v) => v,
        // 1193: unknown variable (MySQL 5.7, MariaDB < 10.5).
        Err(mysql_async::Error::Server(s)) if s.code == 1193 => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Settings {
        log_bin: log_bin == 1,
        binlog_format: format,
        binlog_row_image: image,
        binlog_row_metadata: metadata,
    })
}

impl Settings {
    /// Problems that make correct replication impossible, each with the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.log_bin {
            out.push("binary logging is off: start the server with log_bin".to_string());
        }
        if !self.binlog_format.eq_ignore_ascii_case("ROW") {
            out.push(format!(
                "binlog_format is {}: set binlog_format=ROW",
                self.binlog_format
            ));
        }
        if !self.binlog_row_image.eq_ignore_ascii_case("FULL") {
            out.push(format!(
                "binlog_row_image is {}: set binlog_row_image=FULL",
                self.binlog_row_image
            ));
        }
        out
    }

    /// Advice that does not block replication.
    pub fn warnings(&self) -> Vec<String> {
        match self.binlog_row_metadata.as_deref() {
            Some(m) if m.eq_ignore_ascii_case("FULL") => vec![],
            Some(m) => vec![format!(
                "binlog_row_metadata is {m}: FULL is recommended (column names in the binlog \
                 make schema changes safe)"
            )],
            None => vec![
                "the server has no binlog_row_metadata; column names come from \
                          information_schema"
                    .to_string(),
            ],
        }
    }
}

/// Missing privileges for replication, read from SHOW GRANTS.
pub async fn missing_privileges(conn: &mut Conn) -> Result<Vec<String>, SourceError> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let all = grants.join("\n").to_ascii_uppercase();
    if all.contains("GRANT ALL PRIVILEGES ON *.*") {
        return Ok(vec![]);
    }
    let mut missing = Vec::new();
    if !all.contains("REPLICATION SLAVE") && !all.contains("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE".to_string());
    }
    if !["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"]
        .iter()
        .any(|p| all.contains(p))
    {
        missing.push("REPLICATION CLIENT (BINLOG MONITOR on MariaDB)".to_string());
    }
    if !all.contains("SELECT") {
        missing.push("SELECT (for information_schema and verify)".to_string());
    }
    Ok(missing)
}

/// A replica registered with the server, as `SHOW REPLICAS` (`SHOW SLAVE HOSTS` on
/// MariaDB and before MySQL 8.0.22) lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub server_id: u32,
    pub host: String,
    pub port: u16,
}

impl Replica {
    /// A MySQL or MariaDB replica reports its own port (`report_port` defaults to it);
    /// cdc-cache registers with port 0, so another daemon, or this one's connection from
    /// before a reconnect, is not taken for one. (The host says nothing: the server fills
    /// in the client's when a replica reports none.)
    pub fn is_database_replica(&self) -> bool {
        self.port != 0
    }
}

/// The replicas registered with the server, or why they could not be listed: the
/// server's refusal (MariaDB asks for REPLICATION MASTER ADMIN; a proxy may not know the
/// statement). The listing only guards against a mistake, so a refusal is not an error;
/// a lost connection is.
pub async fn replicas(conn: &mut Conn) -> Result<Result<Vec<Replica>, String>, SourceError> {
    let rows: Vec<Row> = match conn.query("SHOW REPLICAS").await {
        Ok(rows) => rows,
        // MariaDB, or MySQL before 8.0.22 (a syntax error), or a refusal: the old name.
        Err(mysql_async::Error::Server(_)) => match conn.query("SHOW SLAVE HOSTS").await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(s)) => return Ok(Err(s.message)),
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    Ok(Ok(rows.iter().filter_map(replica_of).collect()))
}

/// One row of the listing, by column name: MySQL writes `Server_Id`, MariaDB `Server_id`.
fn replica_of(row: &Row) -> Option<Replica> {
    let index = |name: &str| {
        row.columns_ref()
            .iter()
            .position(|c| c.name_str().eq_ignore_ascii_case(name))
    };
    Some(Replica {
        server_id: row.get_opt(index("server_id")?)?.ok()?,
        host: row
            .get_opt::<Option<String>, _>(index("host")?)?
            .ok()?
            .unwrap_or_default(),
        port: row.get_opt(index("port")?)?.ok()?,
    })
}

/// The database replica already registered as `server_id`, if any: streaming under it
/// would have the server disconnect that replica.
pub fn replica_using(replicas: &[Replica], server_id: u32) -> Option<&Replica> {
    replicas
        .iter()
        .find(|r| r.server_id == server_id && r.is_database_replica())
}

/// The XA transactions prepared on the server now (`XA RECOVER`), as far as the user may
/// see them: their rows are in the binlog before the head, so a start at the head misses
/// them, and their `XA COMMIT` would stop the daemon.
pub async fn prepared_xa(conn: &mut Conn) -> Result<Vec<crate::xa::Xid>, SourceError> {
    let rows: Vec<(u64, usize, usize, Vec<u8>)> = conn.query("XA RECOVER").await?;
    Ok(rows
        .into_iter()
        .filter_map(|(format_id, gtrid_len, _, data)| {
            Some(crate::xa::Xid {
                format_id,
                gtrid: data.get(..gtrid_len)?.to_vec(),
                bqual: data.get(gtrid_len..)?.to_vec(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> Vec<(String, u64)> {
        vec![("bin.000003".into(), 1000), ("bin.000004".into(), 500)]
    }

    #[test]
    fn only_a_database_replica_with_the_same_id_is_in_the_way() {
        let replica = |server_id, host: &str, port| Replica {
            server_id,
            host: host.into(),
            port,
        };
        let listed = vec![
            replica(7, "localhost", 0), // a cdc-cache
            replica(8, "db2", 3306),    // a replica, another id
            replica(9, "localhost", 23307),
        ];
        assert_eq!(replica_using(&listed, 7), None);
        assert_eq!(replica_using(&listed, 10), None);
        assert_eq!(replica_using(&listed, 9), Some(&listed[2]));
        assert!(replica(1, "", 3306).is_database_replica());
    }

    #[test]
    fn positions_are_checked_against_the_binlog_list() {
        let head = Position::new("bin.000004", 500);
        assert!(check_position(&Position::new("bin.000003", 400), &logs(), &head).is_ok());
        assert!(check_position(&head, &logs(), &head).is_ok());
        assert!(matches!(
            check_position(&Position::new("bin.000001", 4), &logs(), &head),
            Err(SourceError::Purged { .. })
        ));
        assert!(matches!(
            check_position(&Position::new("bin.000004", 501), &logs(), &head),
            Err(SourceError::AheadOfHead { .. })
        ));
        assert!(matches!(
            check_position(&Position::new("bin.000009", 4), &logs(), &head),
            Err(SourceError::AheadOfHead { .. })
        ));
    }
}

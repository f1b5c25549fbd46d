//! Which source server to stream from: `source.url`, then `source.failover_urls` in turn.
//!
//! A server is left for the next one when it cannot be reached (a transient error) or
//! when it cannot continue the checkpoint (it lacks some of its GTIDs, purged them, or is
//! another server for a file position): during a failover the old primary is gone and a
//! replica may not have been promoted yet. Only when *every* server has refused the
//! checkpoint since the last progress does the daemon stop (exit 3): no server can
//! continue without losing or repeating changes. Unreachable servers never count as
//! refusals, since they may come back.

use std::collections::BTreeSet;

use tracing::{error, warn};

use crate::config::{redact_url, Config};
use crate::error::Error;
use crate::source::SourceError;

/// What the pipeline does after a failed session.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Retry,
    Stop,
}

pub struct Servers {
    urls: Vec<String>,
    current: usize,
    /// Servers (by index) that refused the checkpoint since the last progress.
    refused: BTreeSet<usize>,
}

impl Servers {
    pub fn new(config: &Config) -> Servers {
        let mut urls = vec![config.source.url.clone()];
        urls.extend(config.source.failover_urls.iter().cloned());
        Servers {
            urls,
            current: 0,
            refused: BTreeSet::new(),
        }
    }

    /// `config` pointed at the current server, with the passwords of its `password_file`s
    /// read again: a rotated password is used from the next session on. A file that
    /// cannot be read now (being replaced) leaves the password read before.
    pub fn session_config(&self, config: &Config) -> Config {
        let mut session = config.clone();
        session.source.url.clone_from(&self.urls[self.current]);
        if let Err(e) = session.read_passwords() {
            warn!(error = %e, "using the password read before");
        }
        session
    }

    /// Decides what follows a failed session; `progressed` says whether it applied
    /// anything (a server that made progress has not refused us), `authenticated`
    /// whether both servers have taken this process's credentials before.
    pub fn after_failure(&mut self, e: &Error, progressed: bool, authenticated: bool) -> Next {
        if progressed {
            self.refused.clear();
        }
        // Credentials that worked and are refused now are being rotated (the server has
        // the new password, the file not yet, or the other way round): retried, with the
        // files read again each time. At the first connection they are simply wrong.
        if authenticated && e.is_auth_refusal() {
            warn!(
                error = %e,
                "credentials that worked before were refused: retrying, with the password \
                 files read again at each attempt; if this goes on, correct the password or \
                 its file (source.password_file, redis.password_file)"
            );
            return Next::Retry;
        }
        if self.urls.len() == 1 {
            return if e.is_definite() {
                Next::Stop
            } else {
                Next::Retry
            };
        }
        if refuses_checkpoint(e) {
            self.refused.insert(self.current);
            if self.refused.len() == self.urls.len() {
                error!("every source server refused the checkpoint; stopping");
                return Next::Stop;
            }
            self.advance(e);
            return Next::Retry;
        }
        if e.is_definite() {
            return Next::Stop;
        }
        if !matches!(e, Error::Sink(_)) {
            self.advance(e);
        }
        Next::Retry
    }

    fn advance(&mut self, e: &Error) {
        let from = self.current;
        self.current = (self.current + 1) % self.urls.len();
        warn!(
            error = %e,
            from = %redact_url(&self.urls[from]),
            to = %redact_url(&self.urls[self.current]),
            "source server failed; trying the next one"
        );
    }
}

/// The server is up but cannot continue from the checkpoint.
fn refuses_checkpoint(e: &Error) -> bool {
    matches!(
        e,
        Error::Source(
            SourceError::GtidMissing { .. }
                | SourceError::GtidRefused { .. }
                | SourceError::OtherServer { .. }
                | SourceError::Purged { .. }
                | SourceError::AheadOfHead { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;

    fn one_server() -> Servers {
        Servers {
            urls: vec!["mysql://cdc@db:3306/".into()],
            current: 0,
            refused: BTreeSet::new(),
        }
    }

    fn mysql(code: u16) -> Error {
        Error::Source(SourceError::Mysql(mysql_async::Error::Server(
            mysql_async::ServerError {
                code,
                message: "refused".into(),
                state: "28000".into(),
            },
        )))
    }

    fn redis(kind: redis::ErrorKind) -> Error {
        Error::Sink(SinkError::Redis((kind, "refused").into()))
    }

    #[test]
    fn credentials_refused_after_they_worked_are_retried_and_stop_at_first() {
        let refusals = [
            mysql(1045),
            mysql(1698),
            redis(redis::ErrorKind::AuthenticationFailed),
        ];
        for e in &refusals {
            assert!(e.is_auth_refusal(), "{e}");
            assert_eq!(
                one_server().after_failure(e, false, true),
                Next::Retry,
                "{e}"
            );
            assert_eq!(
                one_server().after_failure(e, false, false),
                Next::Stop,
                "{e}"
            );
        }
        // Other definite errors stop whether or not the credentials worked before.
        let denied_table = mysql(1142);
        assert!(!denied_table.is_auth_refusal());
        assert_eq!(
            one_server().after_failure(&denied_table, false, true),
            Next::Stop
        );
    }
}

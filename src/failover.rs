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

    /// `config` pointed at the current server.
    pub fn session_config(&self, config: &Config) -> Config {
        let mut session = config.clone();
        session.source.url.clone_from(&self.urls[self.current]);
        session
    }

    /// Decides what follows a failed session; `progressed` says whether it applied
    /// anything (a server that made progress has not refused us).
    pub fn after_failure(&mut self, e: &Error, progressed: bool) -> Next {
        if progressed {
            self.refused.clear();
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

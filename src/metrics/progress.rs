//! What the lag and readiness figures are computed from, shared by the source (what was
//! received and when the server was last heard from), the apply stage (what was applied)
//! and the scrape.
//!
//! Why not "now minus the last commit's timestamp": that grows while the server is idle,
//! paging operators for a cache that is perfectly current. Here lag is the age of the
//! oldest change the daemon has received but not yet applied; with nothing pending it is 0,
//! which the server's heartbeat confirms while idle. If the server goes silent (no event,
//! no heartbeat) or the connection is down, lag is the time since it was last heard from,
//! so a dead stream cannot look caught up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::info;

use crate::checkpoint::{Checkpoint, Position, ServerIdentity};

/// The last applied checkpoint, as the lag and retention metrics need it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub position: Position,
    /// Commit time (unix seconds) of its last transaction.
    pub commit_time: u32,
    /// The server whose binlog `position` is in.
    pub server: ServerIdentity,
}

pub struct Progress {
    state: Mutex<State>,
    /// Silence longer than this (no event, no heartbeat) counts as lag.
    stall_after: Duration,
}

struct State {
    /// Commit timestamps (server clock) of transactions received but not yet applied.
    /// Bounded by the channel capacity plus one step.
    pending: VecDeque<u32>,
    /// First event timestamp of the transaction being received, if one is open.
    receiving_since: Option<u32>,
    last_heard: Instant,
    streaming: bool,
    /// The server said it is idle (heartbeat) since the last event.
    idle_confirmed: bool,
    caught_up_logged: bool,
    backoff: bool,
    applied: Option<Applied>,
}

impl Progress {
    pub fn new(heartbeat_secs: u64) -> Progress {
        Progress {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                receiving_since: None,
                last_heard: Instant::now(),
                streaming: false,
                idle_confirmed: false,
                caught_up_logged: false,
                backoff: false,
                applied: None,
            }),
            stall_after: Duration::from_secs(heartbeat_secs * 2 + 1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new binlog stream is open: nothing is pending from the previous one.
    pub fn stream_started(&self) {
        let mut s = self.lock();
        s.pending.clear();
        s.receiving_since = None;
        s.last_heard = Instant::now();
        s.streaming = true;
        s.idle_confirmed = false;
        s.caught_up_logged = false;
    }

    pub fn stream_ended(&self) {
        let mut s = self.lock();
        s.streaming = false;
        s.pending.clear();
        s.receiving_since = None;
    }

    /// An event arrived; `open` says whether it left a transaction open.
    pub fn event(&self, timestamp: u32, open: bool) {
        let mut s = self.lock();
        s.last_heard = Instant::now();
        s.idle_confirmed = false;
        if !open {
            s.receiving_since = None;
        } else if s.receiving_since.is_none() && timestamp > 0 {
            s.receiving_since = Some(timestamp);
        }
    }

    /// A transaction was received completely (its commit event).
    pub fn received_commit(&self, time: u32) {
        let mut s = self.lock();
        s.pending.push_back(time);
        s.receiving_since = None;
    }

    /// The server's heartbeat: it has nothing more to send right now.
    pub fn heartbeat(&self) {
        let mut s = self.lock();
        s.last_heard = Instant::now();
        s.idle_confirmed = true;
        Self::log_if_caught_up(&mut s);
    }

    /// `transactions` more transactions are applied, the last one at `position`.
    pub fn applied(&self, transactions: usize) {
        let mut s = self.lock();
        for _ in 0..transactions {
            s.pending.pop_front();
        }
        Self::log_if_caught_up(&mut s);
    }

    pub fn set_applied(&self, checkpoint: &Checkpoint) {
        self.lock().applied = Some(Applied {
            position: checkpoint.position.clone(),
            commit_time: checkpoint.commit_time,
            server: checkpoint.server.clone(),
        });
    }

    /// The last applied checkpoint.
    pub fn applied_checkpoint(&self) -> Option<Applied> {
        self.lock().applied.clone()
    }

    fn log_if_caught_up(s: &mut State) {
        let caught_up = s.idle_confirmed && s.pending.is_empty() && s.receiving_since.is_none();
        if caught_up && !s.caught_up_logged {
            s.caught_up_logged = true;
            let position = s.applied.as_ref().map(|a| a.position.to_string());
            info!(position = position.as_deref().unwrap_or("-"), "caught up");
        }
    }

    pub fn set_backoff(&self, on: bool) {
        self.lock().backoff = on;
    }

    pub fn in_backoff(&self) -> bool {
        self.lock().backoff
    }

    /// The lag figure (see the module docs).
    pub fn lag_seconds(&self) -> f64 {
        let s = self.lock();
        let silence = s.last_heard.elapsed();
        if !s.streaming {
            return silence.as_secs_f64();
        }
        let oldest = match (s.pending.front(), s.receiving_since) {
            (Some(&a), Some(b)) => Some(a.min(b)),
            (a, b) => a.copied().or(b),
        };
        if let Some(ts) = oldest {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            return (now - f64::from(ts)).max(0.0);
        }
        if silence > self.stall_after {
            return silence.as_secs_f64();
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as u32
    }

    #[test]
    fn pending_changes_age_and_applying_them_clears_the_lag() {
        let p = Progress::new(5);
        p.stream_started();
        p.event(now() - 30, true);
        assert!(p.lag_seconds() >= 29.0);
        p.received_commit(now() - 20);
        p.received_commit(now() - 10);
        assert!(p.lag_seconds() >= 19.0);
        p.applied(1);
        let lag = p.lag_seconds();
        assert!((9.0..=12.0).contains(&lag), "{lag}");
        p.applied(1);
        assert_eq!(p.lag_seconds(), 0.0);
    }

    #[test]
    fn a_closed_stream_reports_the_silence() {
        let p = Progress::new(5);
        p.stream_started();
        p.stream_ended();
        std::thread::sleep(Duration::from_millis(20));
        assert!(p.lag_seconds() > 0.0);
    }
}

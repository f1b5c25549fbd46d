//! MariaDB GTID state: per replication domain, the last `domain-server-seq` applied. It is
//! what a MariaDB replica hands the server (`@slave_connect_state`) to resume, on the
//! same server or on any other server of the replication topology after a failover.

use std::collections::BTreeMap;
use std::fmt;

/// `0-1-100,1-2-7`: the last GTID of each domain, ordered by domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl GtidState {
    /// Parses `@@gtid_binlog_pos` / `BINLOG_GTID_POS()` text; empty means no GTID yet.
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let mut state = GtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split('-').collect();
            let [domain, server, seq] = fields[..] else {
                return Err(format!("`{part}` is not domain-server-seq"));
            };
            let number = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("`{part}`: bad number"))
            };
            let domain = u32::try_from(number(domain)?).map_err(|_| format!("`{part}`"))?;
            let server = u32::try_from(number(server)?).map_err(|_| format!("`{part}`"))?;
            state.domains.insert(domain, (server, number(seq)?));
        }
        Ok(state)
    }

    /// A transaction with this GTID is complete: it is now its domain's last.
    pub fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    /// The state a GTID_LIST event (163, at the start of every binlog file) carries: the
    /// last GTID of each domain-server pair; per domain the highest seq is the last one.
    pub fn from_gtid_list(data: &[u8]) -> Option<GtidState> {
        let count = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) & 0x0fff_ffff;
        let mut state = GtidState::default();
        for i in 0..count as usize {
            let entry = data.get(4 + 16 * i..4 + 16 * (i + 1))?;
            let domain = u32::from_le_bytes(entry[0..4].try_into().ok()?);
            let server = u32::from_le_bytes(entry[4..8].try_into().ok()?);
            let seq = u64::from_le_bytes(entry[8..16].try_into().ok()?);
            let keep = state.domains.get(&domain).is_none_or(|(_, s)| *s < seq);
            if keep {
                state.domains.insert(domain, (server, seq));
            }
        }
        Some(state)
    }

    /// Adds what `other` knows about domains this state has not seen.
    pub fn union(&mut self, other: &GtidState) {
        for (domain, last) in &other.domains {
            self.domains.entry(*domain).or_insert(*last);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

/// GTIDs of `wanted` that a server's `@@gtid_binlog_state` (the last seq of every
/// domain-server pair in its binlogs) does not reach.
pub fn missing_from(wanted: &GtidState, binlog_state: &str) -> Vec<String> {
    let have: Vec<(u32, u32, u64)> = binlog_state
        .split(',')
        .filter_map(|p| {
            let f: Vec<u64> = p.trim().split('-').filter_map(|n| n.parse().ok()).collect();
            match f[..] {
                [d, s, n] => Some((d as u32, s as u32, n)),
                _ => None,
            }
        })
        .collect();
    wanted
        .domains
        .iter()
        .filter(|(d, (s, n))| {
            !have
                .iter()
                .any(|(hd, hs, hn)| hd == *d && hs == s && hn >= n)
        })
        .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
        .collect()
}

/// The (domain, seq) of a MariaDB GTID event body: seq_no (8 bytes), domain_id (4 bytes).
pub fn parse_event(data: &[u8]) -> Option<(u32, u64)> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some((domain, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_commits_per_domain() {
        let mut s = GtidState::parse("0-1-100, 2-5-7").expect("valid");
        assert_eq!(s.to_string(), "0-1-100,2-5-7");
        s.apply(0, 2, 101);
        s.apply(1, 2, 1);
        assert_eq!(s.to_string(), "0-2-101,1-2-1,2-5-7");
        assert!(GtidState::parse("0-1").is_err());
        let want = GtidState::parse("0-1-100,1-2-5").expect("valid");
        assert!(missing_from(&want, "0-1-150,0-2-160,1-2-5").is_empty());
        assert_eq!(
            missing_from(&want, "0-2-160,1-2-4"),
            vec!["0-1-100", "1-2-5"]
        );
        assert!(GtidState::parse("").expect("empty").is_empty());
    }
}

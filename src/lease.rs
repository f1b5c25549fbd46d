//! Lease-protected read-through fills for applications, on `scripts/lease_get.lua` and
//! `scripts/lease_fill.lua` (the same scripts any language can `EVALSHA`).
//!
//! The race it closes: a reader misses, reads the old row, a writer commits, the daemon
//! deletes or overwrites the key, and the reader's late `SET` puts the old value back. With
//! a lease the miss leaves a marker in the key; the daemon's write or delete after the
//! commit replaces the marker, so the late fill finds its token gone and stores nothing.
//! Whatever the timing: either the fill lands before the daemon's write (which then
//! overwrites it with the committed state), or after it (and is refused).
//!
//! ```no_run
//! # async fn example(conn: redis::aio::MultiplexedConnection) -> Result<(), cdc_cache::lease::LeaseError<std::io::Error>> {
//! use std::time::Duration;
//! let mut cache = cdc_cache::lease::LeaseCache::new(conn);
//! let user = cache
//!     .get_or_fill("user:42", Some(Duration::from_secs(3600)), || async {
//!         Ok::<_, std::io::Error>(Some(r#"{"id":42}"#.to_string())) // read the database here
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Script;

/// The marker a lease leaves in a key; never a cached value (see the scripts).
pub const LEASE_MARKER: &str = "\0cdc-cache:lease:";

pub const LEASE_GET: &str = include_str!("../scripts/lease_get.lua");
pub const LEASE_FILL: &str = include_str!("../scripts/lease_fill.lua");
pub const LEASE_RELEASE: &str = include_str!("../scripts/lease_release.lua");

/// True when a string value read from Redis is a lease marker, not a cached value.
pub fn is_lease_marker(value: &[u8]) -> bool {
    value.starts_with(LEASE_MARKER.as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError<E> {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("loader: {0}")]
    Loader(E),
    #[error("lease_get answered {0:?}, which is not hit, lease or wait")]
    Protocol(String),
}

/// What `lease_get` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(String),
    Lease(String),
    Wait,
}

/// A cache client doing lease-protected fills over one Redis connection.
pub struct LeaseCache<C> {
    conn: C,
    get: Script,
    fill: Script,
    release: Script,
    /// How long a filler may take before its lease lapses.
    pub lease_ttl: Duration,
    /// Pause between retries while another caller holds the lease.
    pub wait: Duration,
    /// Retries before reading the database without filling.
    pub max_waits: u32,
}

impl<C: ConnectionLike + Send> LeaseCache<C> {
    pub fn new(conn: C) -> Self {
        LeaseCache {
            conn,
            get: Script::new(LEASE_GET),
            fill: Script::new(LEASE_FILL),
            release: Script::new(LEASE_RELEASE),
            lease_ttl: Duration::from_secs(10),
            wait: Duration::from_millis(20),
            max_waits: 500,
        }
    }

    /// `lease_get` on `key`.
    pub async fn lookup<E>(&mut self, key: &str) -> Result<Lookup, LeaseError<E>> {
        let answer: Vec<redis::Value> = self
            .get
            .key(key)
            .arg(self.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        let word = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).ok();
        match (answer.first().and_then(word).as_deref(), answer.get(1)) {
            (Some("hit"), Some(redis::Value::Array(_))) => Err(LeaseError::Protocol(
                "a hash (format = \"hash\" keys are read with HGETALL, not filled)".into(),
            )),
            (Some("hit"), Some(v)) => Ok(Lookup::Hit(word(v).unwrap_or_default())),
            (Some("lease"), Some(v)) => Ok(Lookup::Lease(word(v).unwrap_or_default())),
            (Some("wait"), None) => Ok(Lookup::Wait),
            _ => Err(LeaseError::Protocol(format!("{answer:?}"))),
        }
    }

    /// `lease_fill`: true if stored, false if the lease was gone.
    pub async fn fill<E>(
        &mut self,
        key: &str,
        token: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, LeaseError<E>> {
        let ttl_ms = ttl.map(|t| t.as_millis().max(1) as u64).unwrap_or(0);
        let stored: i64 = self
            .fill
            .key(key)
            .arg(token)
            .arg(value)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(stored == 1)
    }

    /// Gives the lease back without filling: true if it was still held.
    pub async fn release<E>(&mut self, key: &str, token: &str) -> Result<bool, LeaseError<E>> {
        let released: i64 = self
            .release
            .key(key)
            .arg(token)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(released == 1)
    }

    /// The cached value, or the loader's (stored under a lease when this caller holds
    /// one). `loader` returns `None` when the row does not exist: nothing is cached then
    /// and the lease is given back. While another caller fills the key this one
    /// waits, up to `max_waits` times, then reads through without filling.
    pub async fn get_or_fill<F, Fut, E>(
        &mut self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Option<String>, LeaseError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<String>, E>>,
    {
        for _ in 0..=self.max_waits {
            match self.lookup(key).await? {
                Lookup::Hit(value) => return Ok(Some(value)),
                Lookup::Lease(token) => {
                    let value = loader().await.map_err(LeaseError::Loader)?;
                    match &value {
                        Some(v) => self.fill(key, &token, v, ttl).await?,
                        None => self.release(key, &token).await?,
                    };
                    return Ok(value);
                }
                Lookup::Wait => tokio::time::sleep(self.wait).await,
            }
        }
        loader().await.map_err(LeaseError::Loader)
    }
}

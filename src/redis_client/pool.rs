//! The sinks' pooled connections: r2d2 over [`connect`], a connection that saw an
//! error dropped from the pool.

use std::sync::Arc;
use std::time::Duration;

use super::{Attempt, RedisClient, RedisConnection, RedisSettings, connect, open_client};
use crate::buffers::BufferPool;
use crate::error::Error;

/// Opens the pool's connections.
struct Connector {
    client: RedisClient,
}

/// A pooled connection that is dropped from the pool after any error, so a retry never
/// reuses a connection in an unknown state (half-read reply, server gone).
struct Tracked {
    connection: RedisConnection,
    broken: bool,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Tracked;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(Tracked {
            connection: connect(&self.client)?,
            broken: false,
        })
    }

    fn is_valid(&self, tracked: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query::<()>(&mut *tracked.connection)
    }

    fn has_broken(&self, tracked: &mut Self::Connection) -> bool {
        tracked.broken || !tracked.connection.is_open()
    }
}

/// The pooled connections to `redis_url`, shared by the sinks of every source (a
/// clone shares the pool).
#[derive(Clone)]
pub struct RedisPool {
    pool: r2d2::Pool<Connector>,
    /// For the start-up check, which connects outside the pool to see the cause.
    client: RedisClient,
    location: String,
    block: bool,
    pool_timeout: Duration,
    /// Buffers of the commands written on its connections, shared by every sink: kept
    /// per sink, a fleet's thousand lanes would each keep one.
    buffers: Arc<BufferPool>,
}

impl RedisPool {
    /// The pool of `redis_pool_max_connections`, opened lazily.
    pub fn new(settings: &RedisSettings) -> Result<Self, Error> {
        let client = open_client(settings)?;
        if settings.pool_gevent_queue {
            log::debug!("redis_pool_gevent_queue is accepted for compatibility and has no effect");
        }
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_max_connections)
            .min_idle(Some(0))
            .connection_timeout(settings.pool_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Connector {
                client: client.clone(),
            });
        Ok(RedisPool {
            pool,
            client,
            location: settings.target.location().to_string(),
            block: settings.pool_block,
            pool_timeout: settings.pool_timeout,
            buffers: Arc::default(),
        })
    }

    /// Buffers for encoding commands, handed from write to write.
    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    /// A connection for one write: see `redis_pool_block`.
    pub fn get(&self) -> Result<Pooled, Attempt> {
        // Without blocking (the original's redis-py ConnectionPool rather than its
        // BlockingConnectionPool) a page takes a free connection or opens a new one up
        // to the maximum, and fails at once only when all of them are in use.
        let full = || {
            let state = self.pool.state();
            state.idle_connections == 0 && state.connections >= self.pool.max_size()
        };
        let pooled = match self.pool.try_get() {
            Some(connection) => Ok(connection),
            None if !self.block && full() => Err(format!(
                "all {} pooled connections are in use (redis_pool_block is off)",
                self.pool.max_size()
            )),
            None => self
                .pool
                .get_timeout(self.pool_timeout)
                .map_err(|e| e.to_string()),
        };
        pooled.map(Pooled).map_err(|message| Attempt {
            message,
            transient: true,
        })
    }

    /// `redis://host:port/db`, safe to log.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Where the pool's connections come from (a check connects outside the pool, to
    /// see the cause of a failure).
    pub fn client(&self) -> &RedisClient {
        &self.client
    }
}

/// A connection out of the pool; one that saw an error is not given back.
pub struct Pooled(r2d2::PooledConnection<Connector>);

impl Pooled {
    pub fn connection(&mut self) -> &mut RedisConnection {
        &mut self.0.connection
    }

    /// Drops the connection instead of giving it back: its state is unknown.
    pub fn discard(&mut self) {
        self.0.broken = true;
    }
}

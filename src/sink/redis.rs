//! The Redis sink: a page becomes one `RPUSH key rec1 rec2 …` (list) or one pipeline of
//! `PUBLISH key rec` (channel), on a connection from an r2d2 pool. A failed write is
//! retried whole, with backoff, on a fresh connection, within the run's limits.

use std::time::{Duration, Instant};

use redis::{ConnectionLike, RetryMethod};

use super::Sink;
use crate::config::{Config, QueueType};
use crate::error::{Error, SinkError};
use crate::graph::retry::{Backoff, RetryOptions};

/// Opens connections with timeouts, so a Redis that stops answering fails a write
/// instead of hanging the run.
#[derive(Clone)]
struct Connector {
    client: redis::Client,
    timeout: Duration,
}

/// A pooled connection that is dropped from the pool after any error, so a retry never
/// reuses a connection in an unknown state (half-read reply, server gone).
struct Tracked {
    connection: redis::Connection,
    broken: bool,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Tracked;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(Tracked {
            connection,
            broken: false,
        })
    }

    fn is_valid(&self, tracked: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query::<()>(&mut tracked.connection)
    }

    fn has_broken(&self, tracked: &mut Self::Connection) -> bool {
        tracked.broken || !tracked.connection.is_open()
    }
}

/// One failed attempt, and whether another could succeed.
struct Attempt {
    message: String,
    transient: bool,
}

impl From<redis::RedisError> for Attempt {
    fn from(e: redis::RedisError) -> Self {
        Attempt {
            transient: !matches!(e.retry_method(), RetryMethod::NoRetry),
            message: e.to_string(),
        }
    }
}

pub struct RedisSink {
    pool: r2d2::Pool<Connector>,
    /// For the start-up check, which connects outside the pool to see the cause.
    connector: Connector,
    endpoint: String,
    key: String,
    queue_type: QueueType,
    block: bool,
    pool_timeout: Duration,
    retry: RetryOptions,
}

/// How long one Redis command may take before the connection counts as dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between write attempts: shorter than Graph's, so that a Redis that stays
/// down fails the run within about half a minute (8 retries: at most 0.25 + 0.5 + … +
/// 8 s), while a restart or failover of a few seconds is ridden out.
pub const REDIS_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(8),
};

impl RedisSink {
    /// `retry` limits every write (and the start-up check): its backoff should be
    /// [`REDIS_BACKOFF`].
    pub fn new(config: &Config, retry: RetryOptions) -> Result<Self, Error> {
        let endpoint = config.redis.endpoint().to_string();
        // The error is described by kind only: its text could quote the URL.
        let client = redis::Client::open(config.redis.url().expose())
            .map_err(|e| Error::Setup(format!("redis_url {endpoint}: {:?}", e.kind())))?;
        if config.redis_pool_gevent_queue {
            log::debug!("redis_pool_gevent_queue is accepted for compatibility and has no effect");
        }
        let connector = Connector {
            client,
            timeout: COMMAND_TIMEOUT,
        };
        let pool = r2d2::Pool::builder()
            .max_size(config.redis_pool_max_connections)
            .min_idle(Some(0))
            .connection_timeout(config.redis_pool_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(connector.clone());
        Ok(RedisSink {
            pool,
            connector,
            endpoint,
            key: config.queue_key.clone(),
            queue_type: config.queue_type,
            block: config.redis_pool_block,
            pool_timeout: config.redis_pool_timeout,
            retry,
        })
    }

    fn connection(&self) -> Result<r2d2::PooledConnection<Connector>, Attempt> {
        let pooled = if self.block {
            self.pool
                .get_timeout(self.pool_timeout)
                .map_err(|e| e.to_string())
        } else {
            self.pool
                .try_get()
                .ok_or_else(|| "no free pooled connection (redis_pool_block is off)".to_string())
        };
        pooled.map_err(|message| Attempt {
            message,
            transient: true,
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries, the deadline
    /// or a stop request say to give up.
    fn with_retries(
        &self,
        mut attempt: impl FnMut() -> Result<(), Attempt>,
    ) -> Result<(), SinkError> {
        let mut retries = 0;
        loop {
            let failure = match attempt() {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !failure.transient || retries >= self.retry.max_retries {
                return Err(self.failed(failure.message));
            }
            let wait = self.retry.backoff.delay(retries);
            retries += 1;
            if Instant::now() + wait > self.retry.deadline {
                return Err(self.failed(format!(
                    "run deadline reached; last error: {}",
                    failure.message
                )));
            }
            log::warn!(
                "{}: {}; retry {retries}/{} in {:.1}s",
                self.endpoint,
                failure.message,
                self.retry.max_retries,
                wait.as_secs_f64()
            );
            if !self.retry.stop.sleep(wait) {
                return Err(self.failed(format!("interrupted; last error: {}", failure.message)));
            }
        }
    }

    fn write_once(&self, records: &[&str]) -> Result<(), Attempt> {
        let mut pooled = self.connection()?;
        let connection = &mut pooled.connection;
        let result = match self.queue_type {
            QueueType::List => redis::cmd("RPUSH")
                .arg(&self.key)
                .arg(records)
                .query::<()>(connection),
            QueueType::Channel => {
                let mut pipe = redis::pipe();
                for record in records {
                    pipe.cmd("PUBLISH").arg(&self.key).arg(*record).ignore();
                }
                pipe.query::<()>(connection)
            }
        };
        result.map_err(|e| {
            pooled.broken = true;
            Attempt::from(e)
        })
    }

    fn failed(&self, message: String) -> SinkError {
        SinkError {
            target: self.endpoint.clone(),
            message,
        }
    }
}

impl Sink for RedisSink {
    fn check(&self) -> Result<(), SinkError> {
        // Directly rather than through the pool, whose timeout error hides the cause.
        use r2d2::ManageConnection;
        self.with_retries(|| {
            let mut connection = self.connector.connect().map_err(|e| {
                let attempt = Attempt::from(e);
                Attempt {
                    message: format!("cannot connect: {}", attempt.message),
                    ..attempt
                }
            })?;
            Ok(self.connector.is_valid(&mut connection)?)
        })
    }

    fn write(&self, records: &[&str]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        self.with_retries(|| self.write_once(records))
    }
}

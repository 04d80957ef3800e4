//! The Redis sink: a page becomes one `RPUSH key rec1 rec2 …` (list) or one pipeline of
//! `PUBLISH key rec` (channel), on a connection from an r2d2 pool.

use std::time::Duration;

use redis::ConnectionLike;

use super::Sink;
use crate::config::{Config, QueueType};
use crate::error::{Error, SinkError};

/// Opens connections with timeouts, so a Redis that stops answering fails a write
/// instead of hanging the run.
#[derive(Clone)]
struct Connector {
    client: redis::Client,
    timeout: Duration,
}

impl r2d2::ManageConnection for Connector {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query::<()>(connection)
    }

    fn has_broken(&self, connection: &mut Self::Connection) -> bool {
        !connection.is_open()
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
}

/// How long one Redis command may take before the connection counts as dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisSink {
    pub fn new(config: &Config) -> Result<Self, Error> {
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
        })
    }

    fn connection(&self) -> Result<r2d2::PooledConnection<Connector>, SinkError> {
        let pooled = if self.block {
            self.pool
                .get_timeout(self.pool_timeout)
                .map_err(|e| e.to_string())
        } else {
            self.pool
                .try_get()
                .ok_or_else(|| "no free pooled connection (redis_pool_block is off)".to_string())
        };
        pooled.map_err(|message| self.failed(message))
    }

    fn failed(&self, message: String) -> SinkError {
        SinkError {
            target: format!("redis {}", self.endpoint),
            message,
        }
    }
}

impl Sink for RedisSink {
    fn check(&self) -> Result<(), SinkError> {
        // Directly rather than through the pool, whose timeout error hides the cause.
        use r2d2::ManageConnection;
        let connector = &self.connector;
        let mut connection = connector
            .connect()
            .map_err(|e| self.failed(format!("cannot connect: {e}")))?;
        connector
            .is_valid(&mut connection)
            .map_err(|e| self.failed(e.to_string()))
    }

    fn write(&self, records: &[&str]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection()?;
        let result = match self.queue_type {
            QueueType::List => redis::cmd("RPUSH")
                .arg(&self.key)
                .arg(records)
                .query::<()>(&mut *connection),
            QueueType::Channel => {
                let mut pipe = redis::pipe();
                for record in records {
                    pipe.cmd("PUBLISH").arg(&self.key).arg(*record).ignore();
                }
                pipe.query::<()>(&mut *connection)
            }
        };
        result.map_err(|e| self.failed(e.to_string()))
    }
}

//! One attempt at Redis, and whether another could succeed: what is transient is
//! retried with backoff; what is not fails at once, with what to do.

use std::time::Instant;

use crate::retry::RetryOptions;

/// One failed attempt, and whether another could succeed.
pub struct Attempt {
    pub message: String,
    pub transient: bool,
}

/// Worth another try: the connection failed or timed out, or the server is loading,
/// failing over or busy. A reply of the wrong type, a script error or a refused
/// password will not change by waiting.
fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if is_certificate_error(e) {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// Runs `attempt` against the Redis at `location` until it succeeds, fails for good, or
/// the retries, the deadline or a stop request say to give up; the error is the last
/// failure's message.
pub fn retrying<T>(
    location: &str,
    retry: &RetryOptions,
    mut attempt: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, String> {
    let mut retries = 0;
    loop {
        let failure = match attempt() {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if !failure.transient || retries >= retry.max_retries {
            return Err(failure.message);
        }
        let wait = retry.backoff.delay(retries);
        retries += 1;
        if Instant::now() + wait > retry.deadline {
            return Err(format!(
                "run deadline reached; last error: {}",
                failure.message
            ));
        }
        log::warn!(
            "{location}: {}; retry {retries}/{} in {:.1}s",
            failure.message,
            retry.max_retries,
            wait.as_secs_f64()
        );
        if !retry.stop.sleep(wait) {
            return Err(format!("interrupted; last error: {}", failure.message));
        }
    }
}

/// What to do when Redis refuses the credentials of `redis_url`.
pub const PASSWORD_REFUSED: &str = "the password (or ACL user and password) in redis_url was \
     refused: set the right one in redis_url or redis_url_file (redis://user:password@host:port/db)";

/// Redis refused the credentials (wrong password, unknown or disabled ACL user, or none
/// given to a server that needs one).
pub fn is_password_refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS") | Some("NOAUTH"))
}

/// The TLS server's certificate was refused: waiting will not change it.
fn is_certificate_error(e: &redis::RedisError) -> bool {
    e.to_string().contains("invalid peer certificate")
}

impl From<redis::RedisError> for Attempt {
    fn from(e: redis::RedisError) -> Self {
        let hint = match e.code() {
            Some("NOPERM") => {
                let text = e.to_string();
                let command = text
                    .split_once(" the '")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(command, _)| command.to_ascii_lowercase());
                return Attempt {
                    transient: false,
                    message: match command {
                        Some(command) => format!(
                            "{text}; the Redis user lacks the right to run {command}: add it with \
                             ACL SETUSER <user> +{command} (docs/redis.md lists every right a run needs)"
                        ),
                        None => format!(
                            "{text}; the Redis user lacks a right msgx-once needs (docs/redis.md's \
                             Redis section lists them: ACL SETUSER <user> …)"
                        ),
                    },
                };
            }
            _ if e
                .to_string()
                .contains("user executing the script can't run") =>
            {
                "; a command msgx-once's script runs is not allowed for this Redis user: give \
                 it the rights of the ACL line in docs/redis.md"
            }
            Some("BEHIND") => {
                "; the consumers are behind: nothing of this page was written, the watermark \
                 holds, and a later run writes it once they have drained the key"
            }
            Some("OOM") => {
                "; Redis is full (maxmemory): nothing of this page was written, and a later \
                 run delivers it once memory is freed"
            }
            _ if is_certificate_error(&e) => {
                "; Redis's TLS certificate was refused: give the CA that signed it in \
                 redis_ca_file (a PEM file), and use the host name the certificate names in \
                 redis_url"
            }
            _ if is_password_refused(&e) => {
                return Attempt {
                    transient: false,
                    message: format!("{e}; {PASSWORD_REFUSED}"),
                };
            }
            _ => "",
        };
        Attempt {
            transient: is_transient(&e),
            message: format!("{e}{hint}"),
        }
    }
}

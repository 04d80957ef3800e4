//! The rights a least-privileged Redis user needs.

/// Every command a run, a backfill, `--check` or the move of earlier key names sends
/// to a standalone Redis (the ACL rights a least-privileged user needs; Cluster adds
/// `cluster|slots`, Sentinel `info` and `wait`). docs/redis.md's ACL line is checked
/// against this list.
pub const COMMANDS: &[&str] = &[
    "ping",
    "select",
    "rpush",
    "xadd",
    "publish",
    "llen",
    "xlen",
    // A first run reads the queue's tail to take over from another exporter.
    "lrange",
    "xrevrange",
    "xinfo|stream",
    "type",
    "exists",
    "get",
    "set",
    "del",
    "pttl",
    "pexpire",
    "hset",
    "hsetnx",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "zadd",
    "zscore",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zcount",
    "zcard",
    "zremrangebyscore",
    "time",
    "eval",
    "evalsha",
    "script|load",
    "watch",
    "unwatch",
    "multi",
    "exec",
];

/// The least-privileged ACL user for `queue_key` (and the other sources' keys beside
/// it): its keys, their state, the shared budget, its channels, [`COMMANDS`].
pub fn acl_line(queue_key: &str) -> String {
    let rights: Vec<String> = COMMANDS.iter().map(|c| format!("+{c}")).collect();
    format!(
        "ACL SETUSER msgx on ><password> resetkeys ~{queue_key} ~{queue_key}:* \
         ~{{{queue_key}* ~msgx:budget:* resetchannels &{queue_key} &{queue_key}:* -@all {}",
        rights.join(" ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_acl_line_grants_every_command_a_run_sends() {
        let doc = include_str!("../../docs/redis.md");
        let line = doc
            .lines()
            .find(|l| l.starts_with("ACL SETUSER msgx "))
            .expect("docs/redis.md's ACL line");
        assert_eq!(line, super::acl_line("ms_graph_exporter"));
    }
}

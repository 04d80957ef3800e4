#!/usr/bin/env bash
# The main job end to end, offline: builds msgx-once and msgx-sim, starts a
# redis-server and the Graph simulator on free loopback ports, runs msgx-once twice as
# cron would (the second run resumes from the watermark the first one stored: right
# after it nothing new is due, so it reads and delivers nothing), shows what landed in
# Redis, and stops both by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
cargo build --locked --release --bins --features simulator >&2

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
start_redis "$work"
start_sim "$work" --rate 2 --tenant demo-tenant.example --client-id demo-client --client-secret demo-secret
echo "redis-server (pid $REDIS_PID) on 127.0.0.1:$REDIS_PORT, msgx-sim (pid $SIM_PID) on $SIM_URL" >&2

export GRAPH_TENANT=demo-tenant.example GRAPH_CLIENT_ID=demo-client GRAPH_CLIENT_SECRET=demo-secret
export GRAPH_GRAPH_URL=$SIM_URL GRAPH_LOGIN_URL=$SIM_URL
export GRAPH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
status=0
for run in 1 2; do
    echo "--- run $run" >&2
    target/release/msgx-once --timelag 120 --streams 2 --stream_frame 30 || status=$?
    echo "msgx-once exited with $status" >&2
    [ "$status" -eq 0 ] || exit "$status"
done
echo "--- in Redis: $(redis-cli -p "$REDIS_PORT" llen ms_graph_exporter) records in list ms_graph_exporter; the first one:" >&2
redis-cli -p "$REDIS_PORT" lindex ms_graph_exporter 0

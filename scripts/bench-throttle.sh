#!/usr/bin/env bash
# Benchmark (not a test): how close msgx-once's pacing comes to a throttled Graph's
# budget. Runs a multi-page backfill against `msgx-sim --throttle N/W` with msgx-once's
# --rate_limit set to the same budget, and prints the achieved request rate as a
# fraction of the allowed rate and the share of requests answered 429.
#
#   scripts/bench-throttle.sh [N/W] [PAGES]     (defaults: 20/2 and 200)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
need_curl
budget=${1:-20/2}
pages=${2:-200}
cargo build --locked --release --bins --features simulator >&2

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
start_redis "$work"
# 10 sign-ins per second and 10 records per page: one page per simulated second.
start_sim "$work" --rate 10 --throttle "$budget" \
    --tenant bench.example --client-id bench --client-secret bench-secret

until_s=$(( $(date +%s) - 600 ))
since_s=$(( until_s - pages ))
started=$(date +%s.%N)
GRAPH_CLIENT_SECRET=bench-secret target/release/msgx-once \
    --tenant bench.example --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
    --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
    --since "$(iso "$since_s")" --until "$(iso "$until_s")" \
    --stream_frame 60 --streams 4 --page_size 10 --rate_limit "$budget" \
    2>"$work/log" || { tail -5 "$work/log" >&2; exit 1; }
ended=$(date +%s.%N)

ok=$(sim_stat "$SIM_URL" graph_200)
throttled=$(sim_stat "$SIM_URL" graph_429)
ok=${ok:-0}; throttled=${throttled:-0}
records=$(redis-cli -p "$REDIS_PORT" llen bench)
awk -v ok="$ok" -v t="$throttled" -v s="$started" -v e="$ended" -v b="$budget" \
    -v r="$records" 'BEGIN {
    split(b, nw, "/"); allowed = nw[1] / nw[2]; secs = e - s; sent = ok + t
    printf "budget            %s (%.1f requests/s)\n", b, allowed
    printf "requests          %d (200: %d, 429: %d)\n", sent, ok, t
    printf "records           %d\n", r
    printf "wall              %.2f s\n", secs
    printf "achieved rate     %.2f requests/s = %.1f %% of allowed\n", sent / secs, 100 * sent / secs / allowed
    printf "after the burst   %.2f requests/s = %.1f %% of allowed (the first %d are free)\n", (sent - nw[1]) / secs, 100 * (sent - nw[1]) / secs / allowed, nw[1]
    printf "answered 429      %.2f %% of requests\n", (sent ? 100 * t / sent : 0)
}'

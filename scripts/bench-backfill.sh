#!/usr/bin/env bash
# Benchmark (not a test): a long backfill within a throttled Graph's budget, with the
# defaults otherwise (no deadline for backfills, one frame per stream). Prints the
# requests, 429s, records and wall time, and what that becomes at Graph's own 5/10.
#
#   scripts/bench-backfill.sh [HOURS] [SIGN-INS/S] [BUDGET]   (defaults: 24 50 50/10)
#
# The budget is scaled (50/10 is ten times Graph's 5/10) so that a day's backfill
# takes minutes; requests and records do not depend on it, the time scales inversely.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_curl
need_time
hours=${1:-24}
rate=${2:-50}
budget=${3:-50/10}
cargo build --locked --release --bins --features simulator >&2

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
start_sim "$work" --rate "$rate" --throttle "$budget" --cache-mb 0 \
    --tenant bench.example --client-id bench --client-secret bench-secret
until_s=$(( $(date +%s) / 3600 * 3600 - 3600 ))
since_s=$(( until_s - hours * 3600 ))
started=$(date +%s.%N)
GRAPH_CLIENT_SECRET=bench-secret /usr/bin/time -v -o "$work/time" target/release/msgx-once \
    --tenant bench.example --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
    --queue_backend file --file_path /dev/null --rate_limit "$budget" \
    --since "$(iso "$since_s")" --until "$(iso "$until_s")" \
    2>"$work/log" || { tail -5 "$work/log" >&2; exit 1; }
ended=$(date +%s.%N)
grep -c "progress: " "$work/log" | sed 's/^/progress lines      /'
grep "summary: " "$work/log" | sed 's/.*summary: /summary            /'
rss=$(awk '/Maximum resident/ { print $NF }' "$work/time")
awk -v s="$started" -v e="$ended" -v b="$budget" -v ok="$(sim_stat "$SIM_URL" graph_200)" \
    -v t="$(sim_stat "$SIM_URL" graph_429)" -v rss="$rss" -v h="$hours" -v r="$rate" 'BEGIN {
    split(b, nw, "/"); allowed = nw[1] / nw[2]; secs = e - s; t = t + 0
    printf "backfill           %d h of %d sign-ins/s against --throttle %s\n", h, r, b
    printf "requests           %d (429: %d)\n", ok + t, t
    printf "wall               %.0f s (%.1f requests/s of %.1f allowed), peak RSS %.0f MiB\n", secs, (ok + t) / secs, allowed, rss / 1024
    printf "at Graph'"'"'s 5/10    %.0f s = %.1f h (requests / 0.5 per second)\n", (ok + t) / 0.5, (ok + t) / 0.5 / 3600
}'

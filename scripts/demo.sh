#!/usr/bin/env bash
# One export end to end, offline: builds msgx-once and msgx-sim, starts the simulator on
# a free loopback port, exports the lagged window of sign-ins as NDJSON to stdout
# (the log goes to stderr), and stops the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
cargo build --locked --release --bins >&2

work=$(mktemp -d)
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

target/release/msgx-sim --port 0 --port-file "$work/port" --rate 2 \
    --tenant demo-tenant --client-id demo-client --client-secret demo-secret >/dev/null &
sim_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
[ -s "$work/port" ] || { echo "msgx-sim did not start" >&2; exit 1; }
sim="http://127.0.0.1:$(cat "$work/port")"
echo "msgx-sim (pid $sim_pid) on $sim" >&2

status=0
GRAPH_CLIENT_SECRET=demo-secret target/release/msgx-once \
    --tenant demo-tenant --client_id demo-client \
    --graph_url "$sim" --login_url "$sim" \
    --queue_backend file --file_path - \
    --timelag 120 --streams 2 --stream_frame 30 || status=$?
echo "msgx-once exited with $status" >&2
exit "$status"

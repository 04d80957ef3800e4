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
trap 'stop_started; rm -rf "$work"' EXIT

start_sim "$work" --rate 2 --tenant demo-tenant --client-id demo-client --client-secret demo-secret
sim=$SIM_URL
echo "msgx-sim (pid $SIM_PID) on $sim" >&2

status=0
GRAPH_CLIENT_SECRET=demo-secret target/release/msgx-once \
    --tenant demo-tenant --client_id demo-client \
    --graph_url "$sim" --login_url "$sim" \
    --queue_backend file --file_path - \
    --timelag 120 --streams 2 --stream_frame 30 || status=$?
echo "msgx-once exited with $status" >&2
exit "$status"

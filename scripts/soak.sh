#!/usr/bin/env bash
# The nemesis, as long as asked: seeded random faults over many cron ticks of a
# two-tenant, two-source deployment against msgx-sim and a real redis-server, then
# one oracle — every record of the settled span delivered exactly once
# (tests/integration/soak.rs says what is drawn and checked). A failure prints the
# seed, the tick-by-tick schedule and the command that replays it.
#
#   scripts/soak.sh [--ticks N] [--seed S]      (default: 100 ticks, a fresh seed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ticks=100
seed=""
while [ $# -gt 0 ]; do
    case $1 in
        --ticks) ticks=${2:?--ticks needs a number}; shift 2 ;;
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        *) echo "usage: scripts/soak.sh [--ticks N] [--seed S]" >&2; exit 2 ;;
    esac
done
[ -n "$seed" ] || seed=$(date +%s%N)
need_cargo
need_redis
echo "soak: seed $seed, $ticks ticks (replay: scripts/soak.sh --seed $seed --ticks $ticks)" >&2
MSGX_SOAK_SEED=$seed MSGX_SOAK_TICKS=$ticks cargo test --locked --features simulator \
    --test integration soak::soak_from_the_environment -- --ignored --nocapture --exact

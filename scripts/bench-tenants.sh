#!/usr/bin/env bash
# Benchmark (not a test): how many tenants one multi-tenant application exports a
# minute within Graph's budgets — 5 requests / 10 s per tenant and 122 / 10 s across
# every tenant of the app (732 a minute) — for quiet (5 sign-ins/s) and busy (50/s)
# tenants, with one msgx-once run per cron tick exporting the whole fleet (`tenants`).
#
# The simulator enforces both budgets in real time (--throttle 5/10 per tenant,
# --throttle-app 122/10) and answers each page after LATENCY_MS (default 200 ms).
# Cron is replayed back to back: tick k is one run at MSGX_NOW = t0 + k minutes,
# started as soon as the one before ended, so the app's budget, not the clock, paces
# the fleet. `rescan 60` (not the default 600) brings every second's second read into
# the first minutes of the replay; a minute of data costs the same two reads either
# way. `stream_frame 4` keeps a first run's window (streams × stream_frame) to about
# the minute of the others. After WARMUP ticks (default 2), MEASURE ticks (default 3) are measured:
#
# - requests a minute, and their share of the app's 732;
# - requests Graph answered 429 (the goal: none);
# - tenants' minutes exported per wall minute (the fleet a minute can keep up with);
# - the longest tick: within 60 s, a real cron minute exports every tenant's minute
#   within that minute.
#
# With PER_TENANT=1 each profile also runs the fleet the way it ran before
# `tenants`: one msgx-once per tenant, all of a tick's at once (a CronJob per tenant),
# without the app-wide budget (app_rate_limit 0: each process sees only its own
# tenant's) — the 429s no single process can see.
#
#   scripts/bench-tenants.sh                     (PROFILES "quiet:300 busy:100")
#   PROFILES="quiet:400 busy:60" MEASURE=5 scripts/bench-tenants.sh
#   PER_TENANT=1 PROFILES="busy:40" scripts/bench-tenants.sh
#   LATENCY_MS=1500 CA_POLICIES=50 STREAMS=8 PROFILES="quiet:10 quiet:40" scripts/bench-tenants.sh
#     (Graph's pace: pages answered in 1.5 s, sign-ins of 11.5 KB)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
need_curl
read -r -a profiles <<<"${PROFILES:-quiet:300 busy:100}"
warmup=${WARMUP:-2}
measure=${MEASURE:-3}
latency=${LATENCY_MS:-200}
streams=${STREAMS:-16}
# Conditional Access policies per sign-in: 2 is about 1.9 KB a record, 50 Microsoft's
# 11.5 KB average.
policies=${CA_POLICIES:-2}
budget=732

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
cargo build --locked --release --bins --features simulator >&2
bin=target/release/msgx-once

rate_of() {
    case $1 in
        quiet) echo 5 ;;
        busy) echo 50 ;;
        *) echo "unknown profile $1 (quiet or busy)" >&2; return 1 ;;
    esac
}

# fleet N: the tenants' names, comma-separated.
fleet() { seq -f 'bench%03g.example' 1 "$1" | paste -sd, -; }

now_ms() { date +%s%3N; }

# tick_fleet NOW TENANTS: one msgx-once run of every tenant; its summary's requests.
tick_fleet() {
    MSGX_NOW=$1 GRAPH_CLIENT_SECRET=bench-secret "$bin" \
        --tenants "$2" --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
        --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
        --streams "$streams" --stream_frame 4 --rescan 60 --max_retries 20 --log_level warn \
        2>"$work/log" || { tail -5 "$work/log" >&2; return 1; }
}

# tick_per_tenant NOW TENANTS: one msgx-once per tenant, all at once, each alone.
tick_per_tenant() {
    local tenant pids=() pid failed=0
    for tenant in ${2//,/ }; do
        MSGX_NOW=$1 GRAPH_CLIENT_SECRET=bench-secret "$bin" \
            --tenant "$tenant" --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
            --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key "bench:$tenant" \
            --rescan 60 --max_retries 20 --app_rate_limit 0 --log_level error \
            2>>"$work/log" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" -eq 0 ] || { tail -5 "$work/log" >&2; return 1; }
}

# replay MODE PROFILE N: WARMUP + MEASURE back-to-back ticks; prints one table row.
replay() {
    local mode=$1 profile=$2 n=$3 rate tenants t0 tick now started ended longest=0
    local before_ok before_429 after_ok after_429 measured_from
    rate=$(rate_of "$profile")
    tenants=$(fleet "$n")
    start_redis "$work"
    # The first tenant is the simulator's home tenant, the others of the same app.
    start_sim "$work" --tenant "${tenants%%,*}" --tenants "${tenants#*,}" \
        --client-id bench --client-secret bench-secret --rate "$rate" --ca-policies "$policies" \
        --latency-ms "$latency" --throttle 5/10 --throttle-app 122/10
    t0=$(( $(date +%s) / 60 * 60 - 3600 ))
    for tick in $(seq 0 $((warmup + measure - 1))); do
        now=$(iso $((t0 + 60 * tick)))
        curl -fsS "$SIM_URL/_sim/clock?now=$now" >/dev/null
        if [ "$tick" -eq "$warmup" ]; then
            before_ok=$(sim_stat "$SIM_URL" graph_200)
            before_429=$(sim_stat "$SIM_URL" graph_429)
            measured_from=$(now_ms)
        fi
        started=$(now_ms)
        "tick_$mode" "$now" "$tenants"
        ended=$(now_ms)
        if [ "$tick" -ge "$warmup" ] && [ $((ended - started)) -gt "$longest" ]; then
            longest=$((ended - started))
        fi
    done
    after_ok=$(sim_stat "$SIM_URL" graph_200)
    after_429=$(sim_stat "$SIM_URL" graph_429)
    stop_started
    awk -v mode="$mode" -v profile="$profile" -v rate="$rate" -v n="$n" -v ticks="$measure" \
        -v ms=$((ended - measured_from)) -v longest="$longest" -v budget="$budget" \
        -v ok=$(( ${after_ok:-0} - ${before_ok:-0} )) \
        -v throttled=$(( ${after_429:-0} - ${before_429:-0} )) 'BEGIN {
            minutes = ms / 60000
            per_minute = (ok + throttled) / minutes
            printf "| %s | %s (%s/s) | %d | %.0f | %.0f %% | %d | %.0f | %.1f s | %s |\n",
                mode, profile, rate, n, per_minute, 100 * per_minute / budget, throttled,
                n * ticks / minutes, longest / 1000, (longest <= 60000 ? "yes" : "no")
        }'
}

echo "streams $streams, page latency $latency ms, warm-up $warmup ticks, $measure measured"
echo
echo "| run | tenants' sign-ins | tenants | requests/min | of 732 | answered 429 | tenant-minutes/min | longest tick | every minute within the minute |"
echo "|---|---|---|---|---|---|---|---|---|"
for spec in "${profiles[@]}"; do
    replay fleet "${spec%%:*}" "${spec##*:}"
    [ -z "${PER_TENANT:-}" ] || replay per_tenant "${spec%%:*}" "${spec##*:}"
done

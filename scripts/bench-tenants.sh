#!/usr/bin/env bash
# Benchmark (not a test): how many tenants one multi-tenant application exports a
# minute within Graph's budgets — 5 requests / 10 s per tenant and 122 / 10 s across
# every tenant of the app (732 a minute) — for quiet (5 sign-ins/s) and busy (50/s)
# tenants, with one msgx-once run per cron tick exporting the whole fleet (`tenants`).
#
# The simulator enforces both budgets in real time (--throttle 5/10 per tenant,
# --throttle-app 122/10) and answers each page at Graph's pace: after LATENCY_MS
# (default 1500) plus PER_RECORD_US per record (default 0), with sign-ins of
# CA_POLICIES Conditional Access policies (default 50: about 12 KB, Microsoft's
# average). msgx-once runs at its shipped settings unless STREAMS is given.
# Cron is replayed back to back: tick k is one run at MSGX_NOW = t0 + k minutes,
# started as soon as the one before ended, so the app's budget, not the clock, paces
# the fleet. `rescan 60` (not the default 600) brings every second's second read into
# the first minutes of the replay; a minute of data costs the same two reads either
# way. `stream_frame 4` keeps a first run's window (streams × stream_frame) short.
# After WARMUP ticks (default 1), MEASURE ticks (default 2) are measured; each prints:
#
# - its wall time (within 60 s: a real cron minute keeps up with the fleet);
# - requests a second, against the app's budget (12.2/s) and the busiest tenant's
#   against its own (0.5/s);
# - records per request (requests follow records: about 1,000 per read when busy);
# - requests Graph answered 429 (the goal: none);
# - msgx-once's peak RSS (/usr/bin/time).
#
# With PER_TENANT=1 each profile also runs the fleet the way it ran before
# `tenants`: one msgx-once per tenant, all of a tick's at once (a CronJob per tenant),
# without the app-wide budget (app_rate_limit 0: each process sees only its own
# tenant's) — the 429s no single process can see.
#
#   scripts/bench-tenants.sh                     (PROFILES "quiet:1 quiet:40 quiet:100")
#   PROFILES="quiet:300 busy:100" MEASURE=3 scripts/bench-tenants.sh
#   LATENCY_MS=3000 PROFILES="quiet:100" scripts/bench-tenants.sh
#   LATENCY_MS=200 CA_POLICIES=2 PROFILES="quiet:300" scripts/bench-tenants.sh
#     (the pace and sizes of the earlier figures: 200 ms pages, 1.9 KB sign-ins)
#   PER_TENANT=1 PROFILES="busy:40" scripts/bench-tenants.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
need_curl
need_time
read -r -a profiles <<<"${PROFILES:-quiet:1 quiet:40 quiet:100}"
warmup=${WARMUP:-1}
measure=${MEASURE:-2}
latency=${LATENCY_MS:-1500}
per_record=${PER_RECORD_US:-0}
streams=()
[ -z "${STREAMS:-}" ] || streams=(--streams "$STREAMS")
# Conditional Access policies per sign-in: 2 is about 1.9 KB a record, 50 Microsoft's
# 11.5 KB average.
policies=${CA_POLICIES:-50}

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

# tick_fleet NOW TENANTS: one msgx-once run of every tenant (or of the only one),
# measured by /usr/bin/time.
tick_fleet() {
    local who=(--tenants "$2")
    [[ $2 == *,* ]] || who=(--tenant "$2")
    MSGX_NOW=$1 GRAPH_CLIENT_SECRET=bench-secret /usr/bin/time -v -o "$work/time" "$bin" \
        "${who[@]}" --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
        --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
        "${streams[@]}" --stream_frame 4 --rescan 60 --max_retries 20 --log_level warn \
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
    echo "Maximum resident set size (kbytes): 0" >"$work/time"
}

# records: every record in Redis so far (the lists of every tenant).
records() {
    redis-cli -p "$REDIS_PORT" --no-raw EVAL "local n = 0
        for _, k in ipairs(redis.call('KEYS', 'bench*')) do
            if redis.call('TYPE', k).ok == 'list' then n = n + redis.call('LLEN', k) end
        end
        return n" 0 | tr -dc 0-9
}

# row PROFILE N TICK MS BEFORE AFTER RECORDS: one tick's figures from the simulator's
# counters before and after it (JSON files) and the records it delivered.
row() {
    python3 - "$@" "$(awk '/Maximum resident/ { print $NF }' "$work/time")" <<'PY'
import json, sys
profile, n, tick, ms, before, after, records, rss = sys.argv[1:9]
before, after = json.load(open(before)), json.load(open(after))
delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
seconds = int(ms) / 1000
requests = delta.get("graph_200", 0) + delta.get("graph_429", 0)
busiest = max((v for k, v in delta.items() if k.startswith("tenant_")), default=requests)
print("| %s | %s | %s | %.1f s | %d | %.2f | %.0f %% | %.2f (%.0f %%) | %.0f | %d | %.0f MiB |" % (
    profile, n, tick, seconds, requests, requests / seconds, 100 * requests / seconds / 12.2,
    busiest / seconds, 100 * busiest / seconds / 0.5, int(records) / max(requests, 1),
    delta.get("graph_429", 0), int(rss or 0) / 1024))
PY
}

# replay MODE PROFILE N: WARMUP + MEASURE back-to-back ticks; prints a row per
# measured tick.
replay() {
    local mode=$1 profile=$2 n=$3 rate tenants t0 tick now started ended before after
    rate=$(rate_of "$profile")
    tenants=$(fleet "$n")
    start_redis "$work"
    # The first tenant is the simulator's home tenant, the others of the same app.
    local others=()
    [[ $tenants == *,* ]] && others=(--tenants "${tenants#*,}")
    start_sim "$work" --tenant "${tenants%%,*}" "${others[@]}" \
        --client-id bench --client-secret bench-secret --rate "$rate" --ca-policies "$policies" \
        --latency-ms "$latency" --latency-per-record-us "$per_record" \
        --throttle 5/10 --throttle-app 122/10
    t0=$(( $(date +%s) / 60 * 60 - 3600 ))
    for tick in $(seq 0 $((warmup + measure - 1))); do
        now=$(iso $((t0 + 60 * tick)))
        curl -fsS "$SIM_URL/_sim/clock?now=$now" >/dev/null
        curl -fsS "$SIM_URL/_sim/stats" >"$work/before.json"
        before=$(records)
        started=$(now_ms)
        "tick_$mode" "$now" "$tenants"
        ended=$(now_ms)
        curl -fsS "$SIM_URL/_sim/stats" >"$work/after.json"
        after=$(records)
        [ "$tick" -lt "$warmup" ] ||
            row "$mode $profile (${rate}/s)" "$n" "$tick" $((ended - started)) \
                "$work/before.json" "$work/after.json" $((after - before))
    done
    stop_started
}

echo "page latency ${latency} ms + ${per_record} us a record, sign-ins of $policies CA policies," \
    "streams ${STREAMS:-default}, warm-up $warmup ticks, $measure measured"
echo
echo "| run | tenants | tick | wall | requests | requests/s | of the app's 12.2/s | busiest tenant/s (of 0.5) | records/request | answered 429 | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for spec in "${profiles[@]}"; do
    replay fleet "${spec%%:*}" "${spec##*:}"
    [ -z "${PER_TENANT:-}" ] || replay per_tenant "${spec%%:*}" "${spec##*:}"
done

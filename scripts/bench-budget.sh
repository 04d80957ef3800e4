#!/usr/bin/env bash
# Benchmark (not a test): Graph requests a per-minute cron spends per minute of data,
# with the defaults (timelag 120, rescan 600, streams 2, page_size 1000), for a range
# of tenant rates — this checkout against an earlier one (BEFORE_REV, default the
# planner that re-read the whole rescan tail every run) — and the keep-up ceiling that
# implies against Graph's 30 requests a minute (5 per 10 s).
#
# Cron is replayed, not waited for: each tick is a msgx-once run at a chosen time
# (MSGX_NOW, the simulator's /_sim/clock), with --rate_limit 0, so it takes seconds.
# Requests are counted by the simulator over the last MEASURE ticks, after WARMUP
# ticks that bring the second pass (rescan) into its steady state.
#
#   scripts/bench-budget.sh [RATE…]     (default: 5 50 200 400 sign-ins/s)
#   BEFORE_REV=<commit> WARMUP=12 MEASURE=5 scripts/bench-budget.sh
#
# With SOURCES (a msgx-once --sources list, or "all"), it measures a multi-source
# deployment instead: requests per minute of each source and of each bucket, against
# that bucket's budget, this checkout only. The simulator's other streams run at
# their shares of RATE (directory audits 0.5, provisioning 0.2, risk and alerts 0.1).
#
#   SOURCES=all scripts/bench-budget.sh 5 50
#
# With DEEP (a --rescan list, e.g. 600,7200), it measures deeper reads instead: each
# rate replayed past the deepest depth (WARMUP defaults to it plus five minutes) with
# Graph's default budget (5 per 10 s, its windows sped up with the MSGX_BUDGET_SPEEDUP
# test knob so the replay does not wait through them): requests per minute of data,
# the fewest reads any second old enough had (3 with two depths: every read done; the
# simulator counts a query for every second of its range, so a deferred frame counts
# as a read of seconds it never paged to — the summary's rescan_behind, from the
# state, says how far each depth really got), and deferred deep frames — this
# checkout only.
#
#   DEEP=600,7200 scripts/bench-budget.sh 5 50 200
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
need_curl
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(5 50 200 400)
before_rev=${BEFORE_REV:-540fcc9}
deep=${DEEP:-}
deepest=${deep##*,}
default_warmup=12
[ -z "$deep" ] || default_warmup=$((deepest / 60 + 5))
warmup=${WARMUP:-$default_warmup}
measure=${MEASURE:-5}

all_sources=signins,signins_noninteractive,signins_service_principal,signins_managed_identity,directory_audits,provisioning,risk_detections,security_alerts
sources=${SOURCES:-}
[ "$sources" != all ] || sources=$all_sources

work=$(mktemp -d)
trap 'stop_started; git worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cargo build --locked --release --bins --features simulator >&2
# replay BINARY RATE [FLAGS…]: WARMUP + MEASURE per-minute ticks against a fresh
# simulator and Redis; leaves the simulator's counters before and after the measured
# ticks in $work/before.json and $work/after.json.
replay() {
    local binary=$1 rate=$2 t0 tick now
    shift 2
    start_redis "$work"
    # Requests are counted, not timed: pages answered at once.
    start_sim "$work" --rate "$rate" --latency-ms 0 --latency-per-record-us 0 \
        --tenant bench.example --client-id bench --client-secret bench-secret
    t0=$(( $(date +%s) / 60 * 60 - 3600 ))
    echo '{}' >"$work/before.json"
    for tick in $(seq 0 $((warmup + measure - 1))); do
        now=$(iso $((t0 + 60 * tick)))
        curl -fsS "$SIM_URL/_sim/clock?now=$now" >/dev/null
        [ "$tick" -ne "$warmup" ] || curl -fsS "$SIM_URL/_sim/stats" >"$work/before.json"
        MSGX_NOW=$now MSGX_BUDGET_SPEEDUP=${BUDGET_SPEEDUP:-1} GRAPH_CLIENT_SECRET=bench-secret "$binary" \
            --tenant bench.example --client_id bench --graph_url "$SIM_URL" --login_url "$SIM_URL" \
            --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
            --rate_limit 0 "$@" \
            2>"$work/log" || { tail -3 "$work/log" >&2; return 1; }
    done
    curl -fsS "$SIM_URL/_sim/stats" >"$work/after.json"
    curl -fsS "$SIM_URL/_sim/reads" >"$work/reads"
    REPLAY_T0=$t0
    stop_started
}

# per_minute KEY: how much a counter grew per measured minute.
per_minute() {
    local before after
    before=$(grep -o "\"$1\":[0-9]*" "$work/before.json" | cut -d: -f2 || true)
    after=$(grep -o "\"$1\":[0-9]*" "$work/after.json" | cut -d: -f2 || true)
    awk -v a="${after:-0}" -v b="${before:-0}" -v m="$measure" 'BEGIN { printf "%.1f", (a - b) / m }'
}

if [ -n "$sources" ]; then
    for rate in "${rates[@]}"; do
        replay target/release/msgx-once "$rate" --sources "$sources" \
            --rate_limits identity_protection=0,security=0
        echo "sign-ins/s $rate, sources $sources: requests per minute of data"
        reports=0 protection=0 security=0
        for source in ${sources//,/ }; do
            n=$(per_minute "${source}_200")
            printf '  %-28s %s\n' "$source" "$n"
            case $source in
                risk_detections) protection=$(awk -v a="$protection" -v b="$n" 'BEGIN { print a + b }') ;;
                security_alerts) security=$(awk -v a="$security" -v b="$n" 'BEGIN { print a + b }') ;;
                *) reports=$(awk -v a="$reports" -v b="$n" 'BEGIN { print a + b }') ;;
            esac
        done
        printf '  bucket reports             %s of 30\n' "$reports"
        printf '  bucket identity_protection %s of 60\n' "$protection"
        printf '  bucket security            %s of 150\n' "$security"
    done
    exit 0
fi

if [ -n "$deep" ]; then
    printf '%-11s %-13s %-22s %-18s %s\n' "sign-ins/s" "requests/min" \
        "fewest reads a second" "rescan_behind" "deferred (last tick)"
    for rate in "${rates[@]}"; do
        BUDGET_SPEEDUP=1000 replay target/release/msgx-once "$rate" --rescan "$deep" \
            --rate_limit 5/10
        # Seconds past every depth by the last tick: the first window's minute up to
        # the deepest depth (and a minute) before the last lagged end.
        last_end=$((REPLAY_T0 + 60 * (warmup + measure - 1) - 120))
        reads=$(awk -v lo=$((REPLAY_T0 - 180)) -v hi=$((last_end - deepest - 60)) '
            { l[NR] = $1; h[NR] = $2 }
            END {
                min = -1
                for (s = lo; s < hi; s++) {
                    c = 0
                    for (i in l) if (l[i] <= s && s <= h[i]) c++
                    if (min < 0 || c < min) min = c
                }
                print (min < 0 ? "-" : min)
            }' "$work/reads")
        summary=$(grep 'summary:' "$work/log" | tail -1)
        behind=$(sed -n 's/.*rescan_behind \([^ ]*\).*/\1/p' <<<"$summary")
        deferred=$(sed -n 's/.* deferred \([0-9]*\).*/\1/p' <<<"$summary")
        printf '%-11s %-13s %-22s %-18s %s\n' "$rate" "$(per_minute graph_200)" "$reads" \
            "${behind:--}" "${deferred:-0}"
    done
    exit 0
fi

echo "building msgx-once at $before_rev for comparison" >&2
git worktree add --detach "$work/before" "$before_rev" >/dev/null 2>&1
(cd "$work/before" && cargo build --locked --release --bin msgx-once \
    --target-dir "$work/before-target" >&2)

# requests_per_minute BINARY RATE: Graph requests per simulated minute, steady state.
requests_per_minute() {
    replay "$1" "$2"
    per_minute graph_200
}

printf '%-14s %-22s %-22s\n' "sign-ins/s" "requests/min before" "requests/min after"
results=()
for rate in "${rates[@]}"; do
    old=$(requests_per_minute "$work/before-target/release/msgx-once" "$rate")
    new=$(requests_per_minute target/release/msgx-once "$rate")
    printf '%-14s %-22s %-22s\n' "$rate" "$old" "$new"
    results+=("$rate $old $new")
done

# Requests grow linearly with the rate: fit the line through the lowest and highest
# rates and solve for Graph's 30 requests a minute.
printf '%s\n' "${results[@]}" | awk '
    NR == 1 { r1 = $1; o1 = $2; n1 = $3 }
    { r2 = $1; o2 = $2; n2 = $3 }
    END {
        if (r2 == r1) { print "keep-up ceiling: needs two rates"; exit }
        bo = (o2 - o1) / (r2 - r1); bn = (n2 - n1) / (r2 - r1)
        printf "keep-up ceiling at 30 requests/min: before %.0f sign-ins/s, after %.0f sign-ins/s\n",
            r1 + (30 - o1) / bo, r1 + (30 - n1) / bn
    }'

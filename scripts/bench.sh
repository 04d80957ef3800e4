#!/usr/bin/env bash
# Benchmark (not a test): how fast and how lean msgx-once is, next to what standard
# tools achieve for the same work on the same machine, at Microsoft's record sizes.
# Prints a table.
#
#   [MSGX_BASELINE=BIN] [FORMATS="azure_monitor ocsf"] scripts/bench.sh [--record-kb "1.5 12 20"] [RECORDS...]
#   (default: 100000 records at each size)
#
# Record size is a parameter: a sign-in lists every enabled Conditional Access policy,
# about 1.5 KB with none, 11.5 KB on average by Microsoft's figure, 20 KB with many;
# each size becomes msgx-sim's --ca-policies. Starts its own redis-server and msgx-sim
# on loopback (stopped by pid at the end). The simulator renders each page once (a
# warm-up pass of each case, untimed) and then serves pages from memory, so the timed
# passes measure msgx-once, curl and Redis, not the simulator. For each record size and count:
# msgx-once backfills (default settings but page_size 1000, 4 streams, no request
# budget; gzip on and off) and catches up as a cron run with state (the seen-set
# path); the same pages downloaded by curl (one process, 4 parallel keep-alive
# transfers); the same records loaded by redis-cli --pipe (one RPUSH per 1000
# records); redis-benchmark RPUSH -P 64 at the same value size (Redis's own ingest
# ceiling). Then the median of an empty-window run (cron with nothing to export).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
kbs="1.5 12 20"
if [ "${1:-}" = --record-kb ]; then
    kbs=${2:?--record-kb needs sizes in KB, e.g. "12" or "1.5 12 20"}
    shift 2
fi
need_cargo
need_redis
need_curl
need_time
counts=("$@")
# MSGX_BASELINE=path/to/an/older/msgx-once: the same msgx-once rows for it too, in
# the same session (compare rows of one table: the machine's speed varies by run).
bins=(target/release/msgx-once ${MSGX_BASELINE:+"$MSGX_BASELINE"})
[ ${#counts[@]} -gt 0 ] || counts=(100000)
cargo build --locked --release --bins --features simulator >&2

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
rate=1000 # sign-ins per simulated second: N records take N/1000 seconds of window
# Pages answered at once: this measures msgx-once's own work beside the standard tools
# (Graph's pace is bench-tenants.sh's and bench-backfill.sh's).
instant=(--latency-ms 0 --latency-per-record-us 0)
secret=bench-secret
start_redis "$work"
redis=(redis-cli -p "$REDIS_PORT")
mkdir -p "$work/empty"
start_sim "$work/empty" --rate 0 --latency-ms 0 --latency-per-record-us 0 --tenant bench.example --client-id bench --client-secret "$secret"
sim_empty=$SIM_URL

token() {
    curl -fsS "$1/bench.example/oauth2/v2.0/token" -d grant_type=client_credentials \
        -d client_id=bench -d "client_secret=$secret" --data-urlencode "scope=$1/.default" |
        sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}
# The first-page URL of the frame [start, end] (inclusive seconds), as msgx-once builds it.
frame_url() {
    local s e
    s=$(date -u -d "@$2" +%Y-%m-%dT%H%%3A%M%%3A%S)
    e=$(date -u -d "@$3" +%Y-%m-%dT%H%%3A%M%%3A%S)
    echo "$1/v1.0/auditLogs/signIns?\$filter=createdDateTime%20ge%20${s}.0000000Z%20and%20createdDateTime%20le%20${e}.9999999Z&\$top=1000"
}
# Follows one frame's nextLinks, printing every page URL (renders the pages once).
walk_frame() {
    local url=$1 page="$work/walk.$BASHPID"
    while [ -n "$url" ]; do
        echo "$url"
        curl -fsS ${CURL_GZIP:+"$CURL_GZIP"} -o "$page" -H "Authorization: Bearer $TOKEN" "$url"
        url=$(grep -o '"@odata.nextLink":"[^"]*"' "$page" | cut -d'"' -f4 || true)
    done
    rm -f "$page"
}
export -f walk_frame
export work

# /usr/bin/time -v fields of the last run.
tv() { grep "$1" "$work/time" | awk -F': ' '{print $2}'; }
wall_of() { tv "Elapsed (wall clock)" | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }'; }

row() { printf "%-46s %9s %8s %10s %8s %7s %9s\n" "$@"; }
results=()
add() { results+=("$(row "$@")"); }
# add_timed LABEL: a row for the run /usr/bin/time -v just measured, moving $records
# records of $bytes bytes.
add_timed() {
    local wall
    wall=$(wall_of)
    add "$1" "$records" "$wall" \
        "$(awk -v r="$records" -v w="$wall" 'BEGIN { printf "%d", r / w }')" \
        "$(awk -v b="$bytes" -v w="$wall" 'BEGIN { printf "%.1f", b / w / 1e6 }')" \
        "$(awk -v u="$(tv 'User time')" -v s="$(tv 'System time')" 'BEGIN { print u + s }')" \
        "$(( $(tv 'Maximum resident set size') / 1024 )) MiB"
}

# The simulator's sign-in is 1505 bytes with no policy and 192 bytes more per policy.
policies_for() { awk -v kb="$1" 'BEGIN { n = int((kb * 1000 - 1505) / 192 + 0.5); print (n < 0 ? 0 : n) }'; }
sims=()
for kb in $kbs; do
    policies=$(policies_for "$kb")
    for pid in "${sims[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    sims=()
    mkdir -p "$work/gzip" "$work/plain"
    start_sim "$work/gzip" --rate "$rate" --cache-mb 8192 --ca-policies "$policies" "${instant[@]}" \
        --tenant bench.example --client-id bench --client-secret "$secret"
    sim=$SIM_URL
    sims+=("$SIM_PID")
    start_sim "$work/plain" --rate "$rate" --cache-mb 8192 --no-gzip --ca-policies "$policies" "${instant[@]}" \
        --tenant bench.example --client-id bench --client-secret "$secret"
    sim_plain=$SIM_URL
    sims+=("$SIM_PID")
    for size in "${counts[@]}"; do
        span=$((size / rate))
        until_s=$(( $(date +%s) / 60 * 60 - 7200 ))
        since_s=$((until_s - span))
        # msgx-once's frames: the window cut into one frame per stream (4).
        frames=()
        step=$(( (span + 3) / 4 ))
        for ((s = since_s; s < until_s; s += step)); do frames+=("$s $((s + step - 1 < until_s - 1 ? s + step - 1 : until_s - 1))"); done
        echo "== $size records of $kb KB ($policies policies): window $(iso "$since_s") - $(iso "$until_s"), ${#frames[@]} frames" >&2

        # Warm-up: render every page once in both simulators, and list the page URLs.
        for target in "$sim" "$sim_plain"; do
            TOKEN=$(token "$target")
            CURL_GZIP=""
            [ "$target" = "$sim" ] && CURL_GZIP=--compressed # caches the gzipped pages too
            export TOKEN CURL_GZIP
            for f in "${frames[@]}"; do read -r s e <<<"$f"; frame_url "$target" "$s" "$e"; done |
                xargs -P 4 -I{} bash -c 'walk_frame "$@"' _ {} >"$work/urls.$(basename "$target" | tr -d :)"
        done
        urls="$work/urls.$(basename "$sim" | tr -d :)"
        pages=$(wc -l <"$urls")

        # The records themselves, as the simulator's oracle lists them (NDJSON), and as RESP.
        : >"$work/records.ndjson"
        for f in "${frames[@]}"; do
            read -r s e <<<"$f"
            curl -fsS -G "$sim/_sim/records" --data-urlencode \
                "\$filter=createdDateTime ge $(date -u -d "@$s" +%Y-%m-%dT%H:%M:%S).0000000Z and createdDateTime le $(date -u -d "@$e" +%Y-%m-%dT%H:%M:%S).9999999Z" \
                >>"$work/records.ndjson"
        done
        records=$(wc -l <"$work/records.ndjson")
        bytes=$(( $(wc -c <"$work/records.ndjson") - records ))
        value_size=$((bytes / records))
        awk -v key=pipe 'BEGIN { ORS = "" }
            function flush() { if (n == 0) return; printf "*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n", n + 2, length(key), key; for (i = 1; i <= n; i++) printf "$%d\r\n%s\r\n", length(batch[i]), batch[i]; n = 0 }
            { batch[++n] = $0; if (n == 1000) flush() }
            END { flush() }' "$work/records.ndjson" >"$work/records.resp"
        rm -f "$work/records.ndjson"
        echo "   $records records, $pages pages, $value_size bytes per record" >&2
        label="$size x $value_size B"

        # msgx-once, gzip (ureq's default) and plain.
        for bin in "${bins[@]}"; do
            tag=""
            [ "$bin" = target/release/msgx-once ] || tag=", baseline"
            for variant in gzip plain; do
                target=$sim
                [ "$variant" = plain ] && target=$sim_plain
                # Twice, timing the second: the first renders msgx-once's own frames.
                for _ in warm timed; do
                    "${redis[@]}" flushall >/dev/null
                    before=$(sim_stat "$target" graph_bytes)
                    GRAPH_CLIENT_SECRET=$secret /usr/bin/time -v -o "$work/time" "$bin" \
                        --tenant bench.example --client_id bench --graph_url "$target" --login_url "$target" \
                        --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
                        --since "$(iso "$since_s")" --until "$(iso "$until_s")" \
                        --stream_frame 10 --streams 4 --page_size 1000 --rate_limit 0 \
                        --log_level warn 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
                done
                wire=$(( $(sim_stat "$target" graph_bytes) - ${before:-0} ))
                got=$("${redis[@]}" llen bench)
                [ "$got" -eq "$records" ] || { echo "msgx-once delivered $got of $records" >&2; exit 1; }
                add_timed "msgx-once $label ($variant$tag)"
                add "   bytes from Graph ($variant)" "" "" "" "$(awk -v b="$wire" 'BEGIN { printf "%.1f MB", b / 1e6 }')" "" ""
            done

            # Each record format named in FORMATS (e.g. "azure_monitor ocsf"): the same
            # backfill, gzip, every record shaped before it is written.
            for format in ${FORMATS:-}; do
                for _ in warm timed; do
                    "${redis[@]}" flushall >/dev/null
                    GRAPH_CLIENT_SECRET=$secret /usr/bin/time -v -o "$work/time" "$bin" \
                        --tenant bench.example --client_id bench --graph_url "$sim" --login_url "$sim" \
                        --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench \
                        --since "$(iso "$since_s")" --until "$(iso "$until_s")" \
                        --stream_frame 10 --streams 4 --page_size 1000 --rate_limit 0 \
                        --record_format "$format" --log_level warn 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
                done
                got=$("${redis[@]}" llen bench)
                [ "$got" -eq "$records" ] || { echo "msgx-once ($format) delivered $got of $records" >&2; exit 1; }
                add_timed "msgx-once $label (gzip, $format$tag)"
            done

            # A cron run catching up with state (seen-set, gzip): a first run leaves a
            # watermark one second into the window, the second exports the rest.
            cron=(--tenant bench.example --client_id bench --graph_url "$sim" --login_url "$sim"
                --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key bench --state auto
                --rate_limit 0 --log_level warn)
            for _ in warm timed; do
                "${redis[@]}" flushall >/dev/null
                MSGX_NOW=$(iso $((since_s + 121))) GRAPH_CLIENT_SECRET=$secret "$bin" \
                    "${cron[@]}" --streams 1 --stream_frame 1 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
                first=$("${redis[@]}" llen bench)
                MSGX_NOW=$(iso $((until_s + 120))) GRAPH_CLIENT_SECRET=$secret \
                    /usr/bin/time -v -o "$work/time" "$bin" "${cron[@]}" \
                    --stream_frame 10 --streams 4 --page_size 1000 --max_catchup "$((span + 60))" \
                    2>"$work/log" || { cat "$work/log" >&2; exit 1; }
            done
            got=$("${redis[@]}" llen bench)
            [ "$got" -eq "$records" ] || { echo "cron catch-up delivered $got of $records" >&2; exit 1; }
            all=$records
            records=$((all - first))
            add_timed "msgx-once $label (cron, state$tag)"
            records=$all
        done

        # curl: the same pages, one process, 4 parallel keep-alive transfers, gzip.
        TOKEN=$(token "$sim")
        sed 's/.*/url = "&"\noutput = "\/dev\/null"/' "$urls" >"$work/curl.cfg"
        /usr/bin/time -v -o "$work/time" curl -fsS --no-progress-meter --compressed --parallel --parallel-max 4 \
            -H "Authorization: Bearer $TOKEN" -K "$work/curl.cfg"
        add_timed "curl download $label (gzip)"

        # redis-cli --pipe: the same records, RPUSH of 1000 at a time.
        "${redis[@]}" flushall >/dev/null
        /usr/bin/time -v -o "$work/time" "${redis[@]}" --pipe <"$work/records.resp" >/dev/null
        add_timed "redis-cli --pipe $label"
        rm -f "$work/records.resp"
        "${redis[@]}" flushall >/dev/null
    done

    # Redis's own ingest ceiling at the same value size.
    "${redis[@]}" flushall >/dev/null
    ceiling=$(redis-benchmark -p "$REDIS_PORT" -t rpush -P 64 -d "$value_size" -n 100000 -q |
        tr '\r' '\n' | grep -o 'RPUSH: [0-9.]*' | tail -1 | awk '{ printf "%d", $2 }')
    "${redis[@]}" flushall >/dev/null
    add "redis-benchmark rpush -P 64 -d $value_size" "100000" "" "$ceiling" \
        "$(awk -v c="$ceiling" -v d="$value_size" 'BEGIN { printf "%.1f", c * d / 1e6 }')" "" ""
done

# Empty windows, as from cron: the original's stateless window, and a stateful run with
# a watermark (it rescans 600 s: 20 empty frames). Median of 11 runs each.
empty_run() {
    local TIMEFORMAT="%3R %3U %3S"
    { time GRAPH_CLIENT_SECRET=$secret target/release/msgx-once --tenant bench.example \
        --client_id bench --graph_url "$sim_empty" --login_url "$sim_empty" \
        --redis_url "redis://127.0.0.1:$REDIS_PORT/0" --queue_key empty \
        --rate_limit 0 --log_level warn "$@" 2>>"$work/log"; } 2>&1
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for mode in off auto; do
    empty_run --state "$mode" >/dev/null # a watermark for the stateful runs
    : >"$work/empty.times"
    for _ in $(seq 11); do empty_run --state "$mode" >>"$work/empty.times"; done
    wall_ms=$(awk '{ print $1 * 1000 }' "$work/empty.times" | median)
    cpu_ms=$(awk '{ print ($2 + $3) * 1000 }' "$work/empty.times" | median)
    add "empty window (state $mode), median" "0" "${wall_ms} ms" "" "" "${cpu_ms} ms" ""
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(redis-server --version | awk '{ print $3 }')"
row "case" "records" "wall s" "records/s" "MB/s" "CPU s" "peak RSS"
printf '%s\n' "${results[@]}"

# shellcheck shell=bash
# Shared by the scripts: install what is missing, as root on a fresh Debian machine.

# A failure inside $(…) fails the script too, instead of printing a figure made of
# whatever came out before it.
shopt -s inherit_errexit

# apt_install PACKAGE: installs a Debian package, as root or through sudo.
apt_install() {
    echo "installing $1 (apt-get)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

need_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
    apt_install redis-server
}

need_curl() {
    command -v curl >/dev/null 2>&1 || apt_install curl
}

need_openssl() {
    command -v openssl >/dev/null 2>&1 || apt_install openssl
}

need_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
}

# A loopback port nothing listens on (random, probed with bash's /dev/tcp).
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# Processes started by start_sim/start_redis, stopped by stop_started (by pid).
STARTED_PIDS=()
stop_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# start_sim WORKDIR FLAGS...: release msgx-sim on a free port; sets SIM_PID and SIM_URL.
start_sim() {
    local dir=$1
    shift
    rm -f "$dir/sim.port"
    target/release/msgx-sim --port 0 --port-file "$dir/sim.port" "$@" >/dev/null &
    SIM_PID=$!
    STARTED_PIDS+=("$SIM_PID")
    for _ in $(seq 200); do [ -s "$dir/sim.port" ] && break; sleep 0.05; done
    [ -s "$dir/sim.port" ] || { echo "msgx-sim did not start" >&2; return 1; }
    # shellcheck disable=SC2034 # read by the scripts that source this file
    SIM_URL="http://127.0.0.1:$(cat "$dir/sim.port")"
}

# start_redis WORKDIR: redis-server on a free loopback port, no persistence; sets
# REDIS_PID and REDIS_PORT.
start_redis() {
    local dir=$1
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$dir" >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    STARTED_PIDS+=("$REDIS_PID")
    for _ in $(seq 200); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "redis-server did not start:" >&2
    tail -5 "$dir/redis.log" >&2
    return 1
}

need_time() {
    [ -x /usr/bin/time ] && return 0
    echo "installing time (apt-get)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null
}

# A Unix time as RFC 3339 UTC, e.g. for --since/--until.
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# sim_stat URL KEY: one counter of msgx-sim's /_sim/stats (empty when not counted yet).
sim_stat() { curl -fsS "$1/_sim/stats" | grep -o "\"$2\":[0-9]*" | cut -d: -f2 || true; }

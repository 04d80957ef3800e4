#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests, which start their
# own redis-server and msgx-sim on free loopback ports and stop them by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_redis
# The credential tests make certificates with openssl.
need_openssl
cargo test --locked --all-targets --features simulator "$@"

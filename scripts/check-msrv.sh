#!/usr/bin/env bash
# Checks Cargo.toml's rust-version against what the locked dependencies declare they
# need (cargo metadata, offline), and builds with that toolchain when it is installed
# (rustup cannot download one here: no network beyond crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
declared=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
needed=$(cargo metadata --locked --format-version 1 2>/dev/null \
    | grep -o '"rust_version":"[0-9.]*"' | cut -d'"' -f4 | sort -V | tail -1)
echo "rust-version declared $declared; the locked dependencies need at most $needed"
if [ "$(printf '%s\n%s\n' "$needed" "$declared" | sort -V | tail -1)" != "$declared" ]; then
    echo "rust-version $declared is lower than $needed, which a locked dependency needs" >&2
    exit 1
fi
toolchain=$declared
[ "$(echo "$declared" | tr -cd . | wc -c)" -eq 2 ] || toolchain=$declared.0
if cargo "+$toolchain" --version >/dev/null 2>&1; then
    cargo "+$toolchain" check --locked --all-targets --features simulator
    echo "builds with Rust $toolchain"
else
    echo "toolchain $toolchain is not installed: the claim rests on the declared versions above"
fi

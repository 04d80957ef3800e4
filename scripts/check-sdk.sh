#!/usr/bin/env bash
# Fidelity check (run by CI): Microsoft's own Graph SDK for Python pages through
# msgx-sim — every resource msgx-once exports parses into the SDK's models and equals
# the simulator's oracle, the SDK's retry handler gets through 429s with a fractional
# Retry-After, a bad $filter is the SDK's ODataError, and properties the SDK does not
# know are reported (scripts/check-sdk.py). The SDKs come from PyPI into a virtualenv
# under target/ that this script creates.
#
#   scripts/check-sdk.sh [SIMULATOR FLAGS...]      (default: --ca-policies 50)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_curl
# Pinned: a new SDK release that disagrees with the simulator is a change to look
# at, not a CI failure out of nowhere.
sdks=(msgraph-sdk==1.65.0 msgraph-beta-sdk==1.66.0)
venv=target/sdk-venv
if ! "$venv/bin/python" -c 'import msgraph, msgraph_beta' 2>/dev/null; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
    echo "installing ${sdks[*]} into $venv (pip)" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${sdks[@]}"
fi
cargo build --locked --release --bin msgx-sim --features simulator >&2

work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--ca-policies 50)
ids=(--tenant sdk-tenant.example --client-id sdk-client --client-secret sdk-secret)
# Updates within the checked window, so the mutable resources show later versions.
start_sim "$work" "${ids[@]}" --rate 2 --update-every 300 "${flags[@]}"
sim=$SIM_URL
mkdir -p "$work/throttled"
start_sim "$work/throttled" "${ids[@]}" --rate 2 --every-429 3 --retry-after 0.5 "${flags[@]}"
"$venv/bin/python" scripts/check-sdk.py "$sim" "$SIM_URL" sdk-tenant.example sdk-client sdk-secret

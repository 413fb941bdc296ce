#!/usr/bin/env bash
# Quick side-by-side figures for a demo crowd: p50 latency of a small GET and the
# throughput of a 256 MiB download, direct from the sample site vs. through the crowd.
# Usage: cargo build --release && tools/measure-core.sh [JONDOS] [GETS]
set -euo pipefail
cd "$(dirname "$0")/.."
JONDOS=${1:-8}
GETS=${2:-300}
out=$(mktemp)
./target/release/crowds demo --jondos "$JONDOS" --proxy-port 0 >"$out" 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 150); do grep -q "Press Ctrl-C" "$out" && break; sleep 0.2; done
proxy=$(grep -o "curl -x http://[0-9.:]*" "$out" | awk '{print $3}')
site=$(grep -o "sample site *http://[0-9.:]*" "$out" | awk '{print $3}')

p50() { sort -n | awk '{a[NR]=$1} END {printf "%.2f ms", a[int((NR+1)/2)]*1000}'; }
lat() { for _ in $(seq "$GETS"); do curl -s -o /dev/null -w '%{time_total}\n' "$@" "$site/whoami"; done | p50; }
tput() { curl -s -o /dev/null -w '%{speed_download}' "$@" "$site/blob/268435456" | awk '{printf "%.0f MB/s", $1/1e6}'; }

echo "crowd: $JONDOS jondos, pf 0.75 (expected path: 5 jondos incl. initiator)"
echo "small GET p50 over $GETS fresh connections: direct $(lat)  crowd $(lat -x "$proxy")"
echo "256 MiB download:   direct $(tput)  crowd $(tput -x "$proxy")  crowd via CONNECT $(tput -p -x "$proxy")"

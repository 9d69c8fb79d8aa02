#!/usr/bin/env bash
# Instructions per check, steady on a loaded machine: runs the command (a server taking
# --grpc-addr) under callgrind with one Tokio worker, sends N checks with h2load, stops it and
# prints total instructions / N. Startup is included (small at N=20000).
#
#   bash authz-server/benches/callgrind.sh header 20000 target/release/authz-server --config rules1.toml
#   bash authz-server/benches/callgrind.sh header 20000 target/release/examples/perf_fixtures floor
#
# PAYLOAD is a perf_fixtures case (header, istio-allow, ...). Profiles stay in $OUT (default
# /tmp/callgrind) for callgrind_annotate --inclusive=yes.
set -euo pipefail
payload=$1 n=$2; shift 2
OUT=${OUT:-/tmp/callgrind}
PORT=${PORT:-19390}
FIX=${FIX:-target/release/examples/perf_fixtures}
mkdir -p "$OUT"
name=$(basename "$1")-$payload-$$
$FIX payload "$payload" "$OUT/$payload.grpc"
if [[ $(basename "$1") == perf_fixtures ]]; then addr=(127.0.0.1:$PORT); else addr=(--grpc-addr 127.0.0.1:$PORT); fi
RUST_LOG=${RUST_LOG:-info} TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/$name.cg" "$@" "${addr[@]}" >"$OUT/$name.out" 2>/dev/null &
pid=$!
for _ in $(seq 90); do grep -q listening "$OUT/$name.out" 2>/dev/null && break; sleep 1; done
h2load -t 1 -c 4 -m 16 -n "$n" -d "$OUT/$payload.grpc" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$PORT/envoy.service.auth.v3.Authorization/Check" | grep '^requests:'
# SIGTERM: the server drains and exits (the floor just exits); callgrind then writes its file.
kill -TERM "$pid"
for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
wait "$pid" 2>/dev/null || true
total=$(callgrind_annotate "$OUT/$name.cg" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$name: $((total / n)) instructions per check ($OUT/$name.cg)"

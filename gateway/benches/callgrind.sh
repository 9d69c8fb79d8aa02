#!/usr/bin/env bash
# Instructions per proxied request of the gateway, steady on a loaded machine: starts the static
# backend and an ext_authz server (bench's `floor`, authz-server with one header rule), runs the
# gateway under callgrind with one Tokio worker, sends N HTTP/1.1 requests with h2load (4
# connections), stops it and prints total instructions / N (startup included, small at N=3000).
#
#   cargo build --release -p gateway -p bench -p authz-server -j 2
#   bash gateway/benches/callgrind.sh grpc 3000                 # gRPC policy to authz-server
#   bash gateway/benches/callgrind.sh grpc-floor 3000           # gRPC policy to the bare floor
#   bash gateway/benches/callgrind.sh http 3000                 # HTTP-transport policy
#   bash gateway/benches/callgrind.sh none 3000                 # no policy
#   GATEWAY=path/to/other/gateway bash gateway/benches/callgrind.sh grpc 3000   # another build
#
# Profiles stay in $OUT (default /tmp/callgrind-gateway) for callgrind_annotate --inclusive=yes.
set -euo pipefail
policy=$1 n=$2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN=${BIN:-$ROOT/target/release}
GATEWAY=${GATEWAY:-$BIN/gateway}
OUT=${OUT:-/tmp/callgrind-gateway}
mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_for() { for _ in $(seq 240); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.5; done; echo "no '$2' in $1" >&2; exit 1; }

TOKIO_WORKER_THREADS=1 "$BIN/floor" --grpc 127.0.0.1:0 --http 127.0.0.1:0 >"$work/floor.out" 2>/dev/null &
pids+=($!)
wait_for "$work/floor.out" "listening http"
backend=$(awk '/listening http/ {print $3}' "$work/floor.out")
floor_grpc=$(awk '/listening grpc/ {print $3}' "$work/floor.out")
cat >"$work/rules.toml" <<'T'
[default]
deny = { status = 403, body = "denied" }

[[rules]]
name = "allow-header"
[rules.when]
headers = [{ name = "x-ext-authz", exact = "allow" }]
[rules.allow]
request_headers = [{ name = "x-authz-rule", value = "{{rule.name}}" }]
T
RUST_LOG=off TOKIO_WORKER_THREADS=1 "$BIN/authz-server" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --config "$work/rules.toml" >"$work/authz.out" 2>/dev/null &
pids+=($!)
wait_for "$work/authz.out" "listening http"
authz_grpc=$(awk '/listening grpc/ {print $3}' "$work/authz.out")
authz_http=$(awk '/listening http/ {print $3}' "$work/authz.out")

cat >"$work/gateway.toml" <<T
[[listeners]]
name = "bench"
address = "127.0.0.1:0"

[[backends]]
name = "backend"
url = "http://$backend"

[[routes]]
name = "all"
path = { prefix = "/" }
backend = "backend"
T
case $policy in
    none) ;;
    grpc | grpc-floor | http)
        url=$authz_grpc transport='grpc = {}'
        [[ $policy == grpc-floor ]] && url=$floor_grpc
        [[ $policy == http ]] && url=$authz_http transport=$'http = {}\nallowed_headers = ["x-ext-authz"]'
        cat >>"$work/gateway.toml" <<T

[[authz_backends]]
name = "authz"
url = "http://$url"

[[policies]]
name = "ext-authz"
target_refs = [{ kind = "Gateway", name = "bench" }]
[policies.ext_auth]
backend = "authz"
$transport
T
        ;;
    *) echo "policy: none, grpc, grpc-floor or http" >&2; exit 2 ;;
esac

name=gateway-$policy-$$
RUST_LOG=${RUST_LOG:-info} TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
    --callgrind-out-file="$OUT/$name.cg" "$GATEWAY" run --config "$work/gateway.toml" \
    >"$work/gateway.out" 2>"$OUT/$name.log" &
gw=$!
wait_for "$work/gateway.out" "listening http"
addr=$(awk '/listening http/ {print $3}' "$work/gateway.out")
h2load --h1 -t 1 -c 4 -n "$n" -H 'x-ext-authz: allow' "http://$addr/v1/chat/completions" |
    grep -E '^requests:|^status codes:'
# SIGTERM: the gateway drains and exits; callgrind then writes its file.
kill -TERM "$gw"
wait "$gw" 2>/dev/null || true
total=$(callgrind_annotate "$OUT/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$name: $((total / n)) instructions per request ($OUT/$name.cg)"

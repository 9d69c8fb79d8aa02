#!/usr/bin/env bash
# Out-of-process Check throughput: the release authz-server against a bare tonic handler (the
# floor), each a separate process with one Tokio worker thread pinned to CPU 1, driven over
# loopback by h2load pinned to CPU 0 with the same gRPC-framed CheckRequest. Rounds interleave
# the servers so drift on a shared machine hits all alike; the report is each case's median
# req/s and its ratio to the floor's median.
#
#   bash authz-server/benches/out_of_process.sh            # ROUNDS=5 SECONDS=4 CONNS=4 STREAMS=16
#   CASES="header header-nolog" bash authz-server/benches/out_of_process.sh
#   BIN_BEFORE=/tmp/old/authz-server CASES="header@before header" bash ...   # before/after
#
# Cases: header (one header rule), istio-allow (built-in default, attribute dump rendered),
# rules200 (200 rules, the deciding one last), header-nolog (one header rule, RUST_LOG=off).
# Decision logs go to /dev/null (written, then discarded).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
SECONDS_PER=${SECONDS:-4}
CONNS=${CONNS:-4}
STREAMS=${STREAMS:-16}
CASES=${CASES:-"header istio-allow rules200 header-nolog"}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release -q -j 2 -p authz-server --bin authz-server --example perf_fixtures
fi
BIN=${BIN:-target/release/authz-server}
FIX=${FIX:-target/release/examples/perf_fixtures}
# BIN_BEFORE: another authz-server binary; cases named CASE@before run it, interleaved with
# the others, for a before/after comparison in one run.
BIN_BEFORE=${BIN_BEFORE:-}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

$FIX rules 1 "$WORK/header.toml"
$FIX rules 200 "$WORK/rules200.toml"
for p in header istio-allow; do $FIX payload "$p" "$WORK/$p.grpc"; done

declare -A PORT PAYLOAD
port=19100
start() { # name, log filter, command...
    local name=$1 filter=$2; shift 2
    port=$((port + 1))
    RUST_LOG=$filter TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$@" --grpc-addr 127.0.0.1:$port \
        >"$WORK/$name.out" 2>/dev/null &
    PIDS+=($!)
    PORT[$name]=$port
}
port=$((port + 1))
RUST_LOG=info TOKIO_WORKER_THREADS=1 taskset -c "$SERVER_CPU" $FIX floor 127.0.0.1:$port >"$WORK/floor.out" 2>/dev/null &
PIDS+=($!)
PORT[floor]=$port
PAYLOAD[floor]=header
for case in $CASES; do
    bin=$BIN
    if [[ $case == *@before ]]; then
        bin=${BIN_BEFORE:?set BIN_BEFORE for $case}
    fi
    case ${case%@before} in
    header) start "$case" info $bin --config "$WORK/header.toml"; PAYLOAD[$case]=header ;;
    header-nolog) start "$case" off $bin --config "$WORK/header.toml"; PAYLOAD[$case]=header ;;
    istio-allow) start "$case" info $bin --http-addr 127.0.0.1:0; PAYLOAD[$case]=istio-allow ;;
    rules200) start "$case" info $bin --config "$WORK/rules200.toml"; PAYLOAD[$case]=header ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
    esac
done
sleep 1

run() { # name -> req/s
    local name=$1
    taskset -c "$CLIENT_CPU" h2load -t 1 -c "$CONNS" -m "$STREAMS" -D "$SECONDS_PER" --warm-up-time=1 \
        -d "$WORK/${PAYLOAD[$name]}.grpc" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:${PORT[$name]}/envoy.service.auth.v3.Authorization/Check" >"$WORK/h2load.txt"
    if ! grep -q " 0 failed, 0 errored" "$WORK/h2load.txt"; then
        echo "h2load reported failures for $name:" >&2; cat "$WORK/h2load.txt" >&2; exit 1
    fi
    awk '/^finished in/ { gsub(",", ""); print $4 }' "$WORK/h2load.txt"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A RATES
echo "load: $(uptime)"
echo "rounds=$ROUNDS seconds=$SECONDS_PER conns=$CONNS streams/conn=$STREAMS server cpu=$SERVER_CPU client cpu=$CLIENT_CPU TOKIO_WORKER_THREADS=1"
for round in $(seq "$ROUNDS"); do
    for name in floor $CASES; do
        RATES[$name]+="$(run "$name") "
    done
    echo "round $round: $(for n in floor $CASES; do printf '%s=%s ' "$n" "$(echo "${RATES[$n]}" | awk '{print $NF}')"; done)"
done
floor_median=$(echo "${RATES[floor]}" | tr ' ' '\n' | grep . | median)
printf '%-20s %12s %8s  %s\n' case "median req/s" ratio rounds
printf '%-20s %12.0f %8s  %s\n' floor "$floor_median" 1.00 "${RATES[floor]}"
for name in $CASES; do
    m=$(echo "${RATES[$name]}" | tr ' ' '\n' | grep . | median)
    printf '%-20s %12.0f %8.2f  %s\n' "$name" "$m" "$(echo "$m / $floor_median" | bc -l)" "${RATES[$name]}"
done

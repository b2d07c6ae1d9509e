#!/usr/bin/env bash
# A/B runs of otpgate alone, for differences smaller than the noise between whole comparison
# runs: two builds, or one build with two settings, alternating (A B, B A, ...), each run on a
# fresh copy of the same 1 M-user store, at one in-flight level. Prints one line per run and
# the means per side.
#
#   KEEP=1 bash benches/compare-freeradius.sh           # once: leaves a work directory
#   WORK=/tmp/otpgate-vs-freeradius.XXXX bash benches/ab.sh
#
# Environment:
#   WORK        the work directory a `KEEP=1` comparison run left (required)
#   A_BIN B_BIN directories with the `otpgate` binary of each side (default: this tree's
#               target/release for both; the load generator is always this tree's)
#   A_ENV B_ENV settings of each side, as `OTPGATE__SECTION__KEY=value` words, e.g.
#               A_ENV=OTPGATE__PASSWORD__REHASH_ON_LOGIN=false
#               B_ENV=OTPGATE__PASSWORD__REHASH_ON_LOGIN=true
#   ROUNDS      pairs of runs (default 4)
#   LEVEL       requests in flight (default 64)
#   DURATION    seconds per run (default 5)
#   SHUFFLE=1   users in a fixed random order instead of the fixture's
#
# A build older than the `[radius] reject_delay_ms` key refuses the work directory's config;
# give it one without that line (A_CONF=FILE or B_CONF=FILE).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${WORK:?set WORK to the directory a KEEP=1 comparison run left}"
A_BIN=${A_BIN:-$ROOT/target/release}
B_BIN=${B_BIN:-$ROOT/target/release}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
A_CONF=${A_CONF:-$WORK/otpgate.toml}
B_CONF=${B_CONF:-$WORK/otpgate.toml}
ROUNDS=${ROUNDS:-4}
LEVEL=${LEVEL:-64}
DURATION=${DURATION:-5}
SHUFFLE=${SHUFFLE:-0}
BENCH=$ROOT/target/release/otpgate-bench
DATA=$(mktemp -d /tmp/otpgate-ab.XXXXXX)
PORT=$(sed -nE 's/^listen = \["127\.0\.0\.1:([0-9]+)"\]/\1/p' "$WORK/otpgate.toml")
SECRET=$(sed -nE 's/^secret = "(.*)"/\1/p' "$WORK/otpgate.toml")
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$DATA"
}
trap cleanup EXIT
shuffle=()
((SHUFFLE)) && shuffle=(--shuffle)

# run SIDE ROUND: one load run; prints "SIDE ROUND accepts/s p50 p99 cpu".
run() {
    local side=$1 round=$2 bin env conf
    if [[ $side == A ]]; then bin=$A_BIN env=$A_ENV conf=$A_CONF; else bin=$B_BIN env=$B_ENV conf=$B_CONF; fi
    rm -rf "$DATA/store"
    cp -a "$WORK/otpgate-data" "$DATA/store"
    sed "s#^path = .*#path = \"$DATA/store\"#" "$conf" >"$DATA/otpgate.toml"
    sync
    # shellcheck disable=SC2086 # env holds words on purpose
    env $env "$bin/otpgate" serve -c "$DATA/otpgate.toml" </dev/null >"$DATA/serve-$side-$round.log" 2>&1 &
    PID=$!
    sleep 2
    "$BENCH" load --target "127.0.0.1:$PORT" --secret "$SECRET" --users "$WORK/fixture/load-users.csv" \
        --first-user $((round * 150000)) --count 140000 --in-flight "$LEVEL" --duration "$DURATION" \
        "${shuffle[@]}" --server-pid "$PID" --json >"$DATA/$side-$round.json"
    kill "$PID"
    wait "$PID" || true
    PID=
    python3 - "$DATA/$side-$round.json" "$side" "$round" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} {sys.argv[3]} {d['accepts_per_s']:.0f} {d['p50_ms']} {d['p99_ms']} {d['cpu_us_per_reply']}")
PY
}

echo "side round accepts/s p50_ms p99_ms cpu_us_per_reply"
results=$DATA/results
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="A B"; else order="B A"; fi
    for side in $order; do run "$side" "$round" | tee -a "$results"; done
done
awk '{ n[$1]++; a[$1] += $3; p[$1] += $5; c[$1] += $6 }
    END { for (s in n) printf "mean %s: %.0f accepts/s, p99 %.2f ms, %.1f us/reply\n", s, a[s] / n[s], p[s] / n[s], c[s] / n[s] }' "$results" | sort

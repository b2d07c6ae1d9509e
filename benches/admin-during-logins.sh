#!/usr/bin/env bash
# Logins at 64 in flight, alone (A) and while administrators work through the admin API at
# RATE actions per second (B): suspend, reinstate, reset and a status read of tokens the login
# load does not use, each change durable before its answer. The bar (issue 13): B's accepts/s
# at least 0.90 of A's and B's p99 at most 1.10 of A's. Prints a markdown table and PASS/FAIL.
#
#   bash benches/admin-during-logins.sh
#   USERS=200000 DURATION=4 ROUNDS=1 bash benches/admin-during-logins.sh
#
# Environment (all optional):
#   USERS     users and TOTP tokens in the fixture (default 1000000); the last 1000 are the
#             admin actions' tokens, the rest log in, half per run (a half is used again
#             once the TOTP step has moved past its last use)
#   DURATION  seconds per run (default 8); ROUNDS rounds of A then B (default 5); the table
#             shows medians over the rounds (and every run's figures)
#   LEVEL     requests in flight (default 64); RATE admin actions per second (default 50)
#   OG_PORT, API_PORT  loopback ports (default 18121, 18443)
#   KEEP=1    keep the work directory; NO_BUILD=1 use the existing release binaries
#
# Everything listens on 127.0.0.1 only; the processes started are stopped by pid on exit.
set -euo pipefail

USERS=${USERS:-1000000}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
LEVEL=${LEVEL:-64}
RATE=${RATE:-50}
OG_PORT=${OG_PORT:-18121}
API_PORT=${API_PORT:-18443}
SECRET=otpgate-bench-shared-secret
KEEP=${KEEP:-0}
NO_BUILD=${NO_BUILD:-0}
ADMIN_TOKENS=1000

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OG_PID=
ADMIN_PID=
WORK=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$ADMIN_PID"
    stop_pid "$OG_PID"
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! [[ $USERS =~ ^[0-9]+$ ]] || ((USERS < 10000)); then die "USERS must be a number >= 10000"; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"

if [[ $NO_BUILD != 1 ]]; then
    log "building otpgate and otpgate-bench (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin otpgate --bin otpgate-bench)
fi
[[ -x $BENCH && -x $OTPGATE ]] || die "missing $BENCH or $OTPGATE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/otpgate-admin-bench.XXXXXX")
mkdir -p "$WORK/results"
FIX=$WORK/fixture
log "fixture: $USERS users in $FIX"
"$BENCH" fixture --users "$USERS" --out "$FIX" >"$WORK/fixture.log"
tail -n "$ADMIN_TOKENS" "$FIX/tokens.csv" | cut -d, -f1 >"$WORK/serials.txt"

CONF=$WORK/otpgate.toml
cat >"$CONF" <<EOF
[storage]
path = "$WORK/otpgate-data"

[radius]
listen = ["127.0.0.1:$OG_PORT"]
reject_delay_ms = 0

[[radius.clients]]
name = "bench"
address = "127.0.0.1/32"
secret = "$SECRET"
application = "default"

[password]
rehash_on_login = false

[admin]
listen = "127.0.0.1:$API_PORT"

[log]
level = "warn"
EOF
log "importing"
"$OTPGATE" user import -c "$CONF" "$FIX/users.csv" >/dev/null
"$OTPGATE" token import -c "$CONF" "$FIX/tokens.csv" >/dev/null
"$OTPGATE" admin-token create bench --role admin -c "$CONF" | tail -n 1 | awk '{print $NF}' >"$WORK/token"

"$OTPGATE" serve -c "$CONF" </dev/null >>"$WORK/otpgate.log" 2>&1 &
OG_PID=$!
for ((i = 0; i < 600; i++)); do
    curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$OG_PID" 2>/dev/null || die "otpgate exited: $(tail -n 5 "$WORK/otpgate.log")"
    sleep 0.2
done
log "otpgate serving (pid $OG_PID)"

HALF=$(((USERS - ADMIN_TOKENS) / 2))
declare -a LAST_STEP=(-1 -1)
NEXT_HALF=0
SHORT_RUNS=0

# run A|B ROUND: one login run, with the admin actions alongside for B.
run() {
    local kind=$1 round=$2 h=$NEXT_HALF out
    NEXT_HALF=$((1 - h))
    while (($(step_now) <= LAST_STEP[h])); do sleep 0.25; done
    out=$WORK/results/$kind-$round.json
    if [[ $kind == B ]]; then
        "$BENCH" admin --server "127.0.0.1:$API_PORT" --token-file "$WORK/token" \
            --serials-file "$WORK/serials.txt" --rate "$RATE" --duration "$DURATION" \
            --first-serial $((round * ADMIN_TOKENS / (ROUNDS + 1))) \
            >"$WORK/results/admin-$round.json" &
        ADMIN_PID=$!
    fi
    "$BENCH" load --target "127.0.0.1:$OG_PORT" --secret "$SECRET" --users "$FIX/load-users.csv" \
        --first-user $((h * HALF)) --count "$HALF" --in-flight "$LEVEL" --duration "$DURATION" \
        --server-pid "$OG_PID" --json >"$out" || die "load run $kind failed"
    LAST_STEP[h]=$(step_now)
    if [[ $kind == B ]]; then
        wait "$ADMIN_PID" || die "admin run failed"
        ADMIN_PID=
        log "$(printf 'admin: %.1f actions/s, %s errors, p99 %.2f ms' \
            "$(json "$WORK/results/admin-$round.json" rate)" \
            "$(json "$WORK/results/admin-$round.json" errors)" \
            "$(json "$WORK/results/admin-$round.json" p99_ms)")"
    fi
    log "$(printf '%s: %8s accepts/s over %s s, p50 %s ms, p99 %s ms, %s us/reply, rejects %s, timeouts %s' \
        "$kind" "$(json "$out" accepts_per_s)" "$(json "$out" elapsed_s)" "$(json "$out" p50_ms)" \
        "$(json "$out" p99_ms)" "$(json "$out" cpu_us_per_reply)" "$(json "$out" rejects)" \
        "$(json "$out" timeouts)")"
    # A run that used up its half of the users before DURATION was shorter than asked: B's
    # then overlapped only the start of the admin actions.
    if awk -v e="$(json "$out" elapsed_s)" -v d="$DURATION" 'BEGIN { exit !(e < 0.9 * d) }'; then
        SHORT_RUNS=$((SHORT_RUNS + 1))
        log "warning: $kind ran out of users after $(json "$out" elapsed_s) s of ${DURATION} s (raise USERS)"
    fi
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then run A "$round"; run B "$round"; else run B "$round"; run A "$round"; fi
done

mean() {
    local f vals=()
    for f in "$WORK/results/$1"-*.json; do vals+=("$(json "$f" "$2")"); done
    printf '%s\n' "${vals[@]}" | awk '{ s += $1; n++ } END { if (n) printf "%.6g\n", s / n; else print "-" }'
}
# The median over the rounds: one run that meets a background flush of the database (seen as
# often without admin actions as with them) does not decide the comparison.
median() {
    local f vals=()
    for f in "$WORK/results/$1"-*.json; do vals+=("$(json "$f" "$2")"); done
    printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[n++] = $1 }
        END { if (!n) print "-"; else if (n % 2) print v[(n - 1) / 2]; else printf "%.6g\n", (v[n/2 - 1] + v[n/2]) / 2 }'
}
# Every run's value, for the record.
each() {
    local f vals=()
    for f in "$WORK/results/$1"-*.json; do vals+=("$(json "$f" "$2")"); done
    echo "${vals[*]}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
A_TPS=$(median A accepts_per_s) B_TPS=$(median B accepts_per_s)
A_P50=$(median A p50_ms) B_P50=$(median B p50_ms)
A_P99=$(median A p99_ms) B_P99=$(median B p99_ms)
A_CPU=$(median A cpu_us_per_reply) B_CPU=$(median B cpu_us_per_reply)
TPS_RATIO=$(ratio "$B_TPS" "$A_TPS") P99_RATIO=$(ratio "$B_P99" "$A_P99")
{
    echo
    echo "$USERS users, $LEVEL in flight, ${DURATION} s runs, $ROUNDS rounds; B with $RATE admin actions/s; medians over the rounds"
    echo
    echo "| | accepts/s | p50 ms | p99 ms | CPU us/reply |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| A: logins alone | $A_TPS | $A_P50 | $A_P99 | $A_CPU |"
    echo "| B: with admin actions | $B_TPS | $B_P50 | $B_P99 | $B_CPU |"
    echo "| B/A | $TPS_RATIO | $(ratio "$B_P50" "$A_P50") | $P99_RATIO | $(ratio "$B_CPU" "$A_CPU") |"
    echo
    echo "every run, accepts/s: A $(each A accepts_per_s); B $(each B accepts_per_s)"
    echo "every run, p99 ms: A $(each A p99_ms); B $(each B p99_ms)"
    echo "means: accepts/s A $(mean A accepts_per_s), B $(mean B accepts_per_s); p99 A $(mean A p99_ms), B $(mean B p99_ms)"
    echo
    echo "admin actions: $(mean admin rate) /s achieved, errors $(mean admin errors) per run, p50 $(mean admin p50_ms) ms, p99 $(mean admin p99_ms) ms"
    if ((SHORT_RUNS)); then
        # Each run has HALF users: a run lasts DURATION only below HALF / DURATION accepts/s.
        echo
        echo "note: $SHORT_RUNS of $((2 * ROUNDS)) login runs used up their $HALF users before ${DURATION} s" \
            "(at $A_TPS accepts/s a full run needs USERS >= $(awk -v r="$A_TPS" -v d="$DURATION" -v a="$ADMIN_TOKENS" \
                'BEGIN { printf "%d", 2 * r * d * 1.2 + a }')): the comparison covers shorter runs than asked."
    fi
    echo
    if awk -v t="$TPS_RATIO" -v p="$P99_RATIO" 'BEGIN { exit !(t >= 0.90 && p <= 1.10) }'; then
        echo "PASS (throughput B/A >= 0.90, p99 B/A <= 1.10)"
    else
        echo "FAIL (throughput B/A $TPS_RATIO, p99 B/A $P99_RATIO; bar >= 0.90 and <= 1.10)"
    fi
}

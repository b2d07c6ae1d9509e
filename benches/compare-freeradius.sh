#!/usr/bin/env bash
# Side-by-side load benchmark: otpgate and FreeRADIUS 3.2 (rlm_pap + rlm_totp) doing the same
# PAP password + TOTP check for the same users, driven by the same load generator
# (target/release/otpgate-bench) on loopback, alternating servers, at 16, 64 and 256 requests
# in flight. Prints one markdown table with both servers and the ratios, otpgate's import
# times, RSS and start-up time, and a kill -9 durability check (PASS/FAIL).
#
#   bash benches/compare-freeradius.sh            # defaults: 1 M users, 8 s runs, 2 rounds
#   USERS=200000 DURATION=4 ROUNDS=1 bash benches/compare-freeradius.sh
#
# Environment (all optional):
#   USERS       users and TOTP tokens in the fixture (default 1000000). Each otpgate run uses
#               half of them, so a run lasts DURATION unless otpgate exceeds
#               USERS / 2 / DURATION accepts/s (it then stops early, the figures stay valid).
#   DURATION    seconds per load run (default 8)
#   ROUNDS      rounds of the six runs (default 2); the table shows the mean over rounds
#   LEVELS      in-flight levels (default "16 64 256")
#   ORDERS      orders the users log in, each a set of runs (default "file shuffled"): `file` is
#               the fixture's order (neighbours in the store's key order, kind to a B-tree's
#               cache), `shuffled` a fixed random order (unrelated users, as in a reconnect
#               storm; FreeRADIUS holds every user in memory and does not care)
#   HASH        password hash in otpgate's users.csv: ssha256 (default; the same salted SHA-256
#               as FreeRADIUS's SSHA2-256-Password) or argon2id (otpgate only does the argon2
#               work then: report it separately; generating 1 M argon2id hashes takes hours,
#               use a small USERS)
#   REHASH=1    otpgate re-hashes the imported hashes to argon2id after each user's first login
#               (`rehash_on_login = true`, the default of a real deployment: the first-login wave
#               after an import); otherwise off, so both servers do the same work. With it, the
#               load runs are followed by REHASH_DRAIN seconds without load (default 10), a
#               graceful stop that reports what the re-hashing did, and a restart.
#   FR_THREADS  FreeRADIUS worker threads (default 4, a fixed pool; see the config template)
#   FR_PORT     FreeRADIUS UDP port on 127.0.0.1 (default 18120)
#   OG_PORT     otpgate UDP port on 127.0.0.1 (default 18121)
#   SECRET      RADIUS shared secret of the 127.0.0.1 client on both (default below)
#   KEEP=1      keep the work directory (fixture, configs, logs, raw JSON) and print its path
#   NO_BUILD=1  use the existing target/release binaries
#
# Everything listens on 127.0.0.1 only. The Debian freeradius service is never used: the
# script runs its own instance from a private config directory (benches/freeradius/) as the
# current user and stops both servers by pid on exit. Needs root only to install FreeRADIUS.
set -euo pipefail

USERS=${USERS:-1000000}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
LEVELS=${LEVELS:-16 64 256}
ORDERS=${ORDERS:-file shuffled}
HASH=${HASH:-ssha256}
REHASH=${REHASH:-0}
REHASH_DRAIN=${REHASH_DRAIN:-10}
FR_THREADS=${FR_THREADS:-4}
FR_PORT=${FR_PORT:-18120}
OG_PORT=${OG_PORT:-18121}
SECRET=${SECRET:-otpgate-bench-shared-secret}
KEEP=${KEEP:-0}
NO_BUILD=${NO_BUILD:-0}

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FR_PID=
OG_PID=
LOAD_PID=
WORK=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$LOAD_PID"
    stop_pid "$OG_PID"
    stop_pid "$FR_PID"
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP == 1 ]]; then
            log "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
# Seconds (3 decimals) between two now_ns values.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
# A number or null from the one-line JSON report in file $1.
rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

if ! [[ $USERS =~ ^[0-9]+$ ]] || ((USERS < 1000)); then die "USERS must be a number >= 1000"; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
for order in $ORDERS; do
    [[ $order == file || $order == shuffled ]] || die "ORDERS: unknown order '$order' (file, shuffled)"
done

# --- 1. FreeRADIUS 3.2 from Debian, and our binaries ------------------------------------------
if ! command -v freeradius >/dev/null 2>&1 || [[ ! -e /usr/lib/freeradius/rlm_totp.so ]]; then
    log "installing FreeRADIUS from Debian (apt-get)"
    ((EUID == 0)) || die "FreeRADIUS is missing and installing it needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq freeradius >/dev/null
    # The package may start its own service on 1812; this benchmark never uses it.
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now freeradius.service >/dev/null 2>&1 || true
    fi
fi
FR_VERSION=$(freeradius -v 2>/dev/null | sed -nE 's/.*FreeRADIUS Version ([0-9.]+).*/\1/p' | head -n1)
[[ $FR_VERSION == 3.2.* ]] || log "warning: FreeRADIUS $FR_VERSION, the config is written for 3.2"

if [[ $NO_BUILD != 1 ]]; then
    log "building otpgate and otpgate-bench (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin otpgate --bin otpgate-bench)
fi
[[ -x $BENCH && -x $OTPGATE ]] || die "missing $BENCH or $OTPGATE"

# --- 2. Work directory and fixture ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/otpgate-vs-freeradius.XXXXXX")
mkdir -p "$WORK/results" "$WORK/fr-run"
FIX=$WORK/fixture
log "fixture: $USERS users ($HASH) in $FIX"
"$BENCH" fixture --users "$USERS" --out "$FIX" --hash "$HASH" >"$WORK/fixture.log"
LOADUSERS=$FIX/load-users.csv

# A request for a user that exists on neither server: any answer (a reject) means "serving".
printf 'no-such-user,not-the-password-000000\n' >"$WORK/probe.csv"
# Waits until the server on port $1 (pid $2) answers; sets ANSWER_S to the seconds since $3
# (a now_ns value). Fails if the server exits or does not answer within 180 s.
wait_answer() {
    local port=$1 pid=$2 since=$3 deadline=$(($(date +%s) + 180)) out=$WORK/probe.json
    while (($(date +%s) < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        "$BENCH" load --target "127.0.0.1:$port" --secret "$SECRET" --replay "$WORK/probe.csv" \
            --in-flight 1 --timeout 0.1 --duration 1 --json >"$out" 2>/dev/null || true
        if [[ $(json "$out" rejects) =~ ^[1-9] || $(json "$out" accepts) =~ ^[1-9] ]]; then
            ANSWER_S=$(secs "$since" "$(now_ns)")
            return 0
        fi
    done
    return 1
}

# --- 3. FreeRADIUS: private config, foreground, as the current user -------------------------
FR_CONF=$WORK/fr-conf
mkdir -p "$FR_CONF"
cp "$ROOT/benches/freeradius/empty" "$FR_CONF/empty"
sed -e "s|@CONFDIR@|$FR_CONF|g" -e "s|@RUNDIR@|$WORK/fr-run|g" -e "s|@PORT@|$FR_PORT|g" \
    -e "s|@SECRET@|$SECRET|g" -e "s|@AUTHORIZE@|$FIX/authorize|g" \
    -e "s|@THREADS@|$FR_THREADS|g" \
    "$ROOT/benches/freeradius/radiusd.conf.in" >"$FR_CONF/radiusd.conf"
log "starting FreeRADIUS $FR_VERSION on 127.0.0.1:$FR_PORT ($FR_THREADS worker threads)"
t0=$(now_ns)
freeradius -f -d "$FR_CONF" -n radiusd </dev/null >"$WORK/fr-stdout.log" 2>&1 &
FR_PID=$!
wait_answer "$FR_PORT" "$FR_PID" "$t0" ||
    die "FreeRADIUS did not answer: $(tail -n 5 "$WORK/fr-run/radius.log" 2>/dev/null)"
FR_START=$ANSWER_S
log "FreeRADIUS answers after ${FR_START} s (pid $FR_PID, RSS $(rss_mib "$FR_PID") MiB)"

# --- 4. otpgate: config, imports, serve -------------------------------------------------------
OG_CONF=$WORK/otpgate.toml
cat >"$OG_CONF" <<EOF
[storage]
path = "$WORK/otpgate-data"

[radius]
listen = ["127.0.0.1:$OG_PORT"]
# Off, as FreeRADIUS has reject_delay = 0 in its bench config: both send every reply at once.
reject_delay_ms = 0

[[radius.clients]]
name = "bench"
address = "127.0.0.1/32"
secret = "$SECRET"
application = "default"

[password]
# Off: keep the imported hashes as they are (salted SHA-256 like FreeRADIUS, or argon2id).
# REHASH=1: upgrade them to argon2id after each first login, as a deployment does by default.
rehash_on_login = $( ((REHASH)) && echo true || echo false)

[log]
# The re-hashing summary at stop (otpgate::auth), not a line per upgraded user.
level = "warn,otpgate::auth=info,otpgate::auth::rehash=warn"
EOF
"$OTPGATE" check-config -c "$OG_CONF" >/dev/null
log "otpgate: importing users"
t0=$(now_ns)
"$OTPGATE" user import -c "$OG_CONF" "$FIX/users.csv" >"$WORK/import-users.log"
IMPORT_USERS=$(secs "$t0" "$(now_ns)")
log "otpgate: importing tokens"
t0=$(now_ns)
"$OTPGATE" token import -c "$OG_CONF" "$FIX/tokens.csv" >"$WORK/import-tokens.log"
IMPORT_TOKENS=$(secs "$t0" "$(now_ns)")
log "imports: users ${IMPORT_USERS} s, tokens ${IMPORT_TOKENS} s"

# Starts `otpgate serve` in the background (OG_PID) and sets ANSWER_S to its start-up time.
start_otpgate() {
    local t0
    t0=$(now_ns)
    "$OTPGATE" serve -c "$OG_CONF" </dev/null >>"$WORK/otpgate.log" 2>&1 &
    OG_PID=$!
    wait_answer "$OG_PORT" "$OG_PID" "$t0" ||
        die "otpgate did not answer: $(tail -n 5 "$WORK/otpgate.log")"
}
start_otpgate
OG_START=$ANSWER_S
log "otpgate answers after ${OG_START} s (pid $OG_PID, RSS $(rss_mib "$OG_PID") MiB)"

# --- 5. Load runs, alternating servers ----------------------------------------------------------
# otpgate refuses a code already accepted (the replay guard remembers the last TOTP step per
# token), so an otpgate run uses one half of the users, the next run the other half, and a
# half is used again only once the TOTP step has moved past its last use. FreeRADIUS 3.2.1's
# rlm_totp keeps no replay state; it gets the same users anyway.
HALF=$((USERS / 2))
declare -a LAST_STEP=(-1 -1)
NEXT_HALF=0
# Sets FIRST to the start of a half that otpgate can use now (waiting for the step if needed).
take_half() {
    local h=$NEXT_HALF
    NEXT_HALF=$((1 - h))
    while (($(step_now) <= LAST_STEP[h])); do sleep 0.25; done
    FIRST=$((h * HALF))
    HALF_TAKEN=$h
}

# run SERVER ORDER LEVEL ROUND: one load run; the JSON report goes to
# results/SERVER-ORDER-LEVEL-ROUND.json.
run() {
    local server=$1 order=$2 level=$3 round=$4 port pid out shuffle=()
    out=$WORK/results/$server-$order-$level-$round.json
    [[ $order == shuffled ]] && shuffle=(--shuffle)
    if [[ $server == og ]]; then
        port=$OG_PORT pid=$OG_PID
        take_half
    else
        # No replay state to respect: the half otpgate uses next, without waiting.
        port=$FR_PORT pid=$FR_PID
        FIRST=$((NEXT_HALF * HALF))
    fi
    "$BENCH" load --target "127.0.0.1:$port" --secret "$SECRET" --users "$LOADUSERS" \
        --first-user "$FIRST" --count "$HALF" --in-flight "$level" --duration "$DURATION" \
        "${shuffle[@]}" --server-pid "$pid" --json >"$out" || die "load run $server $level failed"
    if [[ $server == og ]]; then LAST_STEP[HALF_TAKEN]=$(step_now); fi
    log "$(printf '%-4s %-8s %3s in flight: %8s accepts/s, p99 %s ms, %s us/reply, rejects %s, timeouts %s, bad %s' \
        "$server" "$order" "$level" "$(json "$out" accepts_per_s)" "$(json "$out" p99_ms)" \
        "$(json "$out" cpu_us_per_reply)" "$(json "$out" rejects)" "$(json "$out" timeouts)" \
        "$(json "$out" bad_replies)")"
    kill -0 "$pid" 2>/dev/null || die "$server died during the run"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for order in $ORDERS; do
        for level in $LEVELS; do
            # Alternate which server goes first in each round.
            if ((round % 2 == 1)); then
                run fr "$order" "$level" "$round"
                run og "$order" "$level" "$round"
            else
                run og "$order" "$level" "$round"
                run fr "$order" "$level" "$round"
            fi
        done
    done
done
OG_RSS=$(rss_mib "$OG_PID")
OG_HWM=$(hwm_mib "$OG_PID")
FR_RSS=$(rss_mib "$FR_PID")

# With REHASH=1: the re-hashing runs on spare CPU only, so it must catch up once the load
# stops. A pause, a graceful stop (which logs its counters), a restart for what follows.
REHASH_SUMMARY=
if ((REHASH)); then
    log "re-hash: ${REHASH_DRAIN} s without load, then a graceful stop"
    sleep "$REHASH_DRAIN"
    stop_pid "$OG_PID"
    REHASH_SUMMARY=$(grep -o 'upgraded=.*' "$WORK/otpgate.log" | tail -n 1)
    start_otpgate
fi

# --- 6. The table ---------------------------------------------------------------------------------
# mean SERVER ORDER-LEVEL KEY: mean of KEY over the rounds ("-" when null).
mean() {
    local f vals=()
    for f in "$WORK/results/$1-$2"-*.json; do
        [[ -e $f ]] && vals+=("$(json "$f" "$3")")
    done
    ((${#vals[@]})) || { echo -; return; }
    printf '%s\n' "${vals[@]}" | awk '$1 == "null" || $1 == "" { bad = 1 } { s += $1; n++ }
        END { if (bad || n == 0) print "-"; else printf "%.6g\n", s / n }'
}
# total SERVER ORDER-LEVEL: rejects + timeouts (and bad replies, if any) over the rounds.
total() {
    local f r=0 t=0 b=0
    for f in "$WORK/results/$1-$2"-*.json; do
        [[ -e $f ]] || continue
        r=$((r + $(json "$f" rejects))) t=$((t + $(json "$f" timeouts)))
        b=$((b + $(json "$f" bad_replies)))
    done
    if ((b > 0)); then echo "$r+$t (bad $b)"; else echo "$r+$t"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-") print "-"; else printf "%.*f", d, v }'; }

{
    echo
    echo "## otpgate vs FreeRADIUS $FR_VERSION: PAP + TOTP, $USERS users, $HASH"
    echo
    echo "$(nproc) CPUs ($(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), load generator on the same machine;"
    echo "${DURATION} s per run, mean of $ROUNDS round(s), servers alternating; otpgate $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')."
    echo "FreeRADIUS: rlm_files + rlm_pap (SSHA2-256-Password) + rlm_totp, $FR_THREADS worker threads, no replay state."
    echo "otpgate: replay guard on, every accept fsync'ed before the reply."
    echo
    echo "| order | in flight | FR accepts/s | FR p50 / p99 ms | FR CPU µs/reply | FR rej+t/o | otpgate accepts/s | otpgate p50 / p99 ms | otpgate CPU µs/reply | otpgate rej+t/o | throughput og/FR | CPU og/FR | p99 og/FR |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for order in $ORDERS; do
        for level in $LEVELS; do
            k=$order-$level
            fa=$(mean fr "$k" accepts_per_s) oa=$(mean og "$k" accepts_per_s)
            f50=$(mean fr "$k" p50_ms) o50=$(mean og "$k" p50_ms)
            f99=$(mean fr "$k" p99_ms) o99=$(mean og "$k" p99_ms)
            fc=$(mean fr "$k" cpu_us_per_reply) oc=$(mean og "$k" cpu_us_per_reply)
            echo "| $order | $level | $(fmt "$fa" 0) | $(fmt "$f50" 2) / $(fmt "$f99" 2) | $(fmt "$fc" 1) | $(total fr "$k") | $(fmt "$oa" 0) | $(fmt "$o50" 2) / $(fmt "$o99" 2) | $(fmt "$oc" 1) | $(total og "$k") | $(ratio "$oa" "$fa") | $(ratio "$oc" "$fc") | $(ratio "$o99" "$f99") |"
        done
    done
    echo
    echo "otpgate with $USERS users and tokens: import users ${IMPORT_USERS} s, tokens ${IMPORT_TOKENS} s;"
    echo "start-up (launch to first answer) ${OG_START} s; RSS while serving ${OG_RSS} MiB (peak ${OG_HWM} MiB)."
    echo "FreeRADIUS: start-up ${FR_START} s, RSS ${FR_RSS} MiB."
    if ((REHASH)); then
        echo "Re-hashing to argon2id on (REHASH=1); at the stop ${REHASH_DRAIN} s after the load: ${REHASH_SUMMARY:-no summary logged}."
    fi
} | tee "$WORK/table.md"

# --- 7. Durability: kill -9 during a run, restart, replay every accepted code ---------------------
stop_pid "$FR_PID"
FR_PID=
take_half
# Kill after 2 s, or after a third of the time otpgate needs for the half at 64 in flight.
rate=$(mean og "${ORDERS%% *}-64" accepts_per_s)
KILL_AFTER=$(awk -v r="$rate" -v n="$HALF" 'BEGIN { t = 2; if (r != "-" && r > 0 && n / r / 3 < t) t = n / r / 3; printf "%.2f", (t < 0.2 ? 0.2 : t) }')
log "durability: load on otpgate at 64 in flight, kill -9 after ${KILL_AFTER} s"
ACCEPTED=$WORK/accepted.csv
"$BENCH" load --target "127.0.0.1:$OG_PORT" --secret "$SECRET" --users "$LOADUSERS" \
    --first-user "$FIRST" --count "$HALF" --in-flight 64 --duration 4 --timeout 1 \
    --accepted-log "$ACCEPTED" --json >"$WORK/durability-load.json" 2>"$WORK/durability-load.err" &
LOAD_PID=$!
DUR_T0=$(date +%s)
sleep "$KILL_AFTER"
EARLY=0
kill -0 "$LOAD_PID" 2>/dev/null || EARLY=1
kill -9 "$OG_PID"
wait "$OG_PID" 2>/dev/null || true
OG_PID=
wait "$LOAD_PID" || true
LOAD_PID=
LAST_STEP[HALF_TAKEN]=$(step_now)
# With KEEP=1, the store as the kill left it, to replay a failure from.
((KEEP)) && cp -a "$WORK/otpgate-data" "$WORK/otpgate-data-at-kill"
start_otpgate
OG_RESTART=$ANSWER_S
LOGGED=$(wc -l 2>/dev/null <"$ACCEPTED" || echo 0)
WITH_CODE=$(grep -cE '^u[0-9]{7},pw-[0-9]{7}-x[0-9]{6}$' "$ACCEPTED" 2>/dev/null || true)
"$BENCH" load --target "127.0.0.1:$OG_PORT" --secret "$SECRET" --replay "$ACCEPTED" \
    --in-flight 64 --count "$((LOGGED + 1))" --duration 120 --timeout 2 --json \
    --accepted-log "$WORK/replay-accepted.csv" >"$WORK/durability-replay.json" 2>"$WORK/durability-replay.err" || true
REPLAY_AGE=$(($(date +%s) - DUR_T0))
r_acc=$(json "$WORK/durability-replay.json" accepts)
r_rej=$(json "$WORK/durability-replay.json" rejects)
r_to=$(json "$WORK/durability-replay.json" timeouts)
echo
if ((EARLY)); then
    echo "note: the load run had ended before the kill (raise USERS): accepts were not in flight."
fi
# A code that is also the code of a neighbouring step (about one in a million) may be valid
# again: the load generator leaves such accepts out of the log it replays, and says how many.
echo "Durability: kill -9 ${KILL_AFTER} s into a run; accepted before the kill: ${LOGGED}" \
    "($(json "$WORK/durability-load.json" accepts) accepts reported," \
    "$(json "$WORK/durability-load.json" accepted_recurring) left out as their code recurs in a neighbouring step);" \
    "restart to first answer ${OG_RESTART} s;"
echo "replayed ${LOGGED} accepted codes ${REPLAY_AGE} s after the run began: accepts ${r_acc:-?}, rejects ${r_rej:-?}, timeouts ${r_to:-?}."
verdict=PASS
if ((LOGGED == 0)); then
    verdict=FAIL
    echo "FAIL: nothing was accepted before the kill, so nothing was checked."
elif ((WITH_CODE != LOGGED)); then
    verdict=FAIL
    echo "FAIL: $((LOGGED - WITH_CODE)) of $LOGGED lines of the accepted log do not end with the" \
        "6-digit code that was accepted, so replaying them proves nothing."
elif [[ $r_acc != 0 ]]; then
    verdict=FAIL
    echo "FAIL: ${r_acc:-?} replayed codes were accepted after the restart:" \
        "$(head -n 5 "$WORK/replay-accepted.csv" 2>/dev/null | cut -d, -f1 | tr '\n' ' ')"
elif [[ $r_rej != "$LOGGED" ]]; then
    verdict=FAIL
    echo "FAIL: expected $LOGGED rejects, got ${r_rej:-?} (timeouts ${r_to:-?})."
fi
((REPLAY_AGE <= 30)) || echo "note: replayed more than 30 s after the codes were used; some are outside the TOTP window anyway."
echo "Durability check: $verdict"
echo "$verdict" >"$WORK/durability.verdict"
log "done"
[[ $verdict == PASS ]]

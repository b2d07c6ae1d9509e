# Shared by the benchmark scripts (sourced): paths of the release binaries, logging, stopping
# the processes a script started, reading the load generator's one-line JSON reports.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
BENCH=$BIN/otpgate-bench
OTPGATE=$BIN/otpgate
STARTED=$(date +%s)

log() { printf '[%4ds] %s\n' "$(($(date +%s) - STARTED))" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Stops a process we started: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

# A number or null from the one-line JSON report in file $1.
json() { sed -nE "s/.*\"$2\":(null|-?[0-9][0-9.eE+-]*).*/\\1/p" "$1" | head -n1; }
# The current TOTP step (30 s).
step_now() { echo $(($(date +%s) / 30)); }

#!/usr/bin/env bash
# End-to-end client tests: start `gridstore server` on a temp dir and free
# loopback ports, run real S3 clients against it (aws-cli, boto3, rclone,
# restic, s3cmd) and WebDAV clients (rclone's webdav backend, litmus),
# print a summary, stop the server.
#
#   tests/e2e/run.sh                 # all suites
#   E2E_SUITES="boto3 rclone" tests/e2e/run.sh
#
# Environment:
#   GRIDSTORE_BIN        the binary (default: target/debug/gridstore in the repo);
#                        nothing is built here
#   GRIDSTORE_E2E_VENV   venv holding awscli, boto3 and s3cmd, put first on PATH
#                        when it exists (default /opt/gridstore-e2e-venv, as
#                        installed by .ci/run)
#   E2E_SUITES           space-separated subset of: awscli boto3 rclone restic s3cmd webdav
#   E2E_SUITE_TIMEOUT    seconds per suite (default 900)
#   E2E_KEEP=1           keep the temp dir (server data and logs)
#
# Each suite also runs alone against any endpoint:
#   ENDPOINT=http://127.0.0.1:9000 AK=... SK=... tests/e2e/awscli.sh
set -euo pipefail

E2E_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$E2E_DIR/../.." && pwd)"
BIN="${GRIDSTORE_BIN:-$ROOT/target/debug/gridstore}"
VENV="${GRIDSTORE_E2E_VENV:-/opt/gridstore-e2e-venv}"
SUITES="${E2E_SUITES:-awscli boto3 rclone restic s3cmd webdav}"
SUITE_TIMEOUT="${E2E_SUITE_TIMEOUT:-900}"
READY_TIMEOUT=120

if [[ -x "$VENV/bin/python3" ]]; then
    export PATH="$VENV/bin:$PATH"
fi
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
unset AWS_CA_BUNDLE # plain http to loopback; rclone refuses to start with it set

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-e2e-run.XXXXXX")"
LOG="$TMP/server.log"
SERVER_PID=""

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server (pid $SERVER_PID) still running 30 s after SIGTERM: SIGKILL" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cleanup() {
    stop_server
    if [[ "${E2E_KEEP:-}" == 1 ]]; then
        echo "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

print_server_log() {
    echo "----- server log (last ${1:-200} lines of $LOG)"
    tail -n "${1:-200}" "$LOG" 2>/dev/null || true
    echo "----- end of server log"
}

# summary rows: name status seconds detail
ROWS=()
N_PASS=0
N_FAIL=0
row() { # NAME pass|FAIL SECONDS DETAIL
    ROWS+=("$(printf '%-10s %-5s %7ss  %s' "$1" "$2" "$3" "$4")")
    if [[ "$2" == pass ]]; then N_PASS=$((N_PASS + 1)); else N_FAIL=$((N_FAIL + 1)); fi
}

summary() {
    echo
    echo "=== e2e summary (binary: $BIN)"
    printf '%-10s %-5s %8s  %s\n' suite state time detail
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo "e2e: $N_PASS passed, $N_FAIL failed"
}

# ---------------------------------------------------------------- start

if [[ ! -x "$BIN" ]]; then
    echo "gridstore binary not found at $BIN (build it first, or set GRIDSTORE_BIN)" >&2
    exit 1
fi
if ! "$BIN" server --help >/dev/null 2>&1; then
    echo "$BIN has no working 'server' subcommand:" >&2
    "$BIN" server --help >&2 || true
    exit 1
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
DAVPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
JOBPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
AK="GSE2EACCESSKEY000001"
SK="gridstore-e2e-secret-key-0123456789abcdef"
export AK SK

echo "=== starting $BIN server $TMP/data --listen 127.0.0.1:$PORT --webdav-listen 127.0.0.1:$DAVPORT"
t0=$(now)
(
    cd "$TMP"
    export GRIDSTORE_ACCESS_KEY="$AK" GRIDSTORE_SECRET_KEY="$SK"
    exec "$BIN" server "$TMP/data" --listen "127.0.0.1:$PORT" \
        --webdav-listen "127.0.0.1:$DAVPORT" --jobs-listen "127.0.0.1:$JOBPORT" --admin-listen 127.0.0.1:0 --region us-east-1
) >"$LOG" 2>&1 &
SERVER_PID=$!

ready=""
deadline=$((SECONDS + READY_TIMEOUT))
while ((SECONDS < deadline)); do
    if ready=$(grep -m1 '^gridstore server ready: S3 on http://' "$LOG" 2>/dev/null); then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
        SERVER_PID=""
        echo "server exited (status $rc) before it was ready" >&2
        print_server_log
        row startup FAIL "$(elapsed "$t0")" "server exited with status $rc before the ready line"
        summary
        exit 1
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "no ready line within ${READY_TIMEOUT}s" >&2
    print_server_log
    row startup FAIL "$(elapsed "$t0")" "no 'gridstore server ready' line within ${READY_TIMEOUT}s"
    summary
    exit 1
fi
sleep 0.3 # let the credential lines that follow the ready line arrive
echo "$ready"
ENDPOINT=$(sed -E 's#^gridstore server ready: S3 on (http://[^ /]+).*#\1#' <<<"$ready")
startup_detail="ready after $(elapsed "$t0")s at $ENDPOINT"
startup_ok=pass
case "$ENDPOINT" in
    "http://127.0.0.1:$PORT") ;;
    *)
        echo "server announced $ENDPOINT, expected http://127.0.0.1:$PORT" >&2
        startup_ok=FAIL
        startup_detail="announced $ENDPOINT, not the --listen address http://127.0.0.1:$PORT"
        ENDPOINT="http://127.0.0.1:$PORT" # only 127.0.0.1 is ever targeted
        ;;
esac
if ! grep -qF "access key: $AK" "$LOG" || ! grep -qF "secret key: $SK" "$LOG"; then
    startup_ok=FAIL
    startup_detail+="; the log lacks 'access key: $AK' / 'secret key: ...' (GRIDSTORE_ACCESS_KEY/SECRET_KEY not used?)"
fi
grep -qF -- "--endpoint-url" "$LOG" || { startup_ok=FAIL; startup_detail+="; no 'aws --endpoint-url ... s3 ls' example line"; }
grep -qF "WebDAV on http://127.0.0.1:$DAVPORT/" "$LOG" || { startup_ok=FAIL; startup_detail+="; no 'WebDAV on http://127.0.0.1:$DAVPORT/' line"; }
row startup "$startup_ok" "$(elapsed "$t0")" "$startup_detail"
DAV_ENDPOINT="http://127.0.0.1:$DAVPORT"
GRIDSTORE_DATA="$TMP/data"
GRIDSTORE_BIN="$BIN"
export ENDPOINT REGION=us-east-1 DAV_ENDPOINT GRIDSTORE_DATA GRIDSTORE_BIN

# ---------------------------------------------------------------- suites

suite_cmd() {
    case "$1" in
        awscli) echo "aws:bash $E2E_DIR/awscli.sh" ;;
        boto3)  echo "python3:python3 $E2E_DIR/boto3_suite.py" ;;
        rclone) echo "rclone:bash $E2E_DIR/rclone.sh" ;;
        restic) echo "restic:bash $E2E_DIR/restic.sh" ;;
        s3cmd)  echo "s3cmd:bash $E2E_DIR/s3cmd.sh" ;;
        webdav) echo "litmus:bash $E2E_DIR/webdav.sh" ;;
        *) return 1 ;;
    esac
}

mkdir -p "$TMP/logs"
for suite in $SUITES; do
    if ! spec=$(suite_cmd "$suite"); then
        row "$suite" FAIL 0 "unknown suite"
        continue
    fi
    tool="${spec%%:*}"
    cmd="${spec#*:}"
    echo
    echo "=== suite $suite ($(date -u +%H:%M:%S))"
    if ! command -v "$tool" >/dev/null 2>&1; then
        row "$suite" FAIL 0 "client '$tool' not installed (see .ci/run)"
        continue
    fi
    if [[ "$suite" == boto3 ]] && ! python3 -c 'import boto3' 2>/dev/null; then
        row "$suite" FAIL 0 "python module boto3 not installed (see .ci/run)"
        continue
    fi
    if [[ -z "$SERVER_PID" ]] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        row "$suite" FAIL 0 "server not running (died earlier)"
        continue
    fi
    ts=$(now)
    set +e
    # shellcheck disable=SC2086 # cmd is "interpreter script"
    RUN_ID="$(date +%s)$RANDOM" timeout --kill-after=15 "$SUITE_TIMEOUT" $cmd 2>&1 | tee "$TMP/logs/$suite.log"
    rc=${PIPESTATUS[0]}
    set -e
    dt=$(elapsed "$ts")
    counts=$(grep -E "^$suite: [0-9]+ passed, [0-9]+ failed" "$TMP/logs/$suite.log" | tail -n1 || true)
    failed_cases=$(grep -E "^$suite failed cases: " "$TMP/logs/$suite.log" | tail -n1 | sed "s/^$suite failed cases: //" || true)
    detail="${counts#"$suite: "}"
    [[ -n "$failed_cases" ]] && detail+=" [failed: $failed_cases]"
    if ((rc == 124 || rc == 137)); then
        detail="timed out after ${SUITE_TIMEOUT}s; $detail"
    elif [[ -z "$counts" ]]; then
        detail="exit $rc without a result line"
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        detail+="; SERVER DIED during this suite"
        rc=1
    fi
    if ((rc == 0)); then
        row "$suite" pass "$dt" "$detail"
    else
        row "$suite" FAIL "$dt" "$detail"
    fi
done

# ---------------------------------------------------------------- stop

echo
echo "=== stopping the server (SIGTERM)"
ts=$(now)
if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 60); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        row shutdown FAIL "$(elapsed "$ts")" "still running 30 s after SIGTERM (killed)"
    else
        wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
        if ((rc == 0)); then
            row shutdown pass "$(elapsed "$ts")" "exited 0 on SIGTERM"
        else
            row shutdown FAIL "$(elapsed "$ts")" "exited with status $rc on SIGTERM"
        fi
    fi
    SERVER_PID=""
else
    row shutdown FAIL 0 "server was not running at the end"
fi

if grep -qE 'panicked at|RUST_BACKTRACE' "$LOG"; then
    row panics FAIL 0 "the server log shows a panic: $(grep -m1 -E 'panicked at' "$LOG" | cut -c1-200)"
else
    row panics pass 0 "no panic in the server log"
fi

if ((N_FAIL)); then
    print_server_log 150
fi
summary
((N_FAIL == 0))

# Shared helpers for the bash client suites. Source it; it expects
# ENDPOINT (http://127.0.0.1:PORT), AK and SK in the environment.
#
# A suite defines functions case_NAME and calls `run_case NAME` for each;
# every case runs in a subshell with `set -e`, so its first failing command
# fails that case only. `finish` prints "N passed, N failed" and returns
# non-zero when a case failed.

: "${ENDPOINT:?set ENDPOINT, e.g. http://127.0.0.1:9000}"
: "${AK:?set AK (access key)}"
: "${SK:?set SK (secret key)}"
REGION="${REGION:-us-east-1}"

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ADDR="${ENDPOINT#http://}"
ADDR="${ADDR%/}"
case "$ADDR" in
    127.0.0.1:*|localhost:*) ;;
    *) echo "refusing to target $ENDPOINT: only 127.0.0.1 is allowed" >&2; exit 2 ;;
esac

# Plain HTTP to loopback: no proxy, and no CA bundle (rclone's AWS SDK
# refuses to start when AWS_CA_BUNDLE is set, even for http endpoints).
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
unset AWS_CA_BUNDLE

# A per-run suffix keeps bucket names unique when a suite runs twice
# against one server.
RUN_ID="${RUN_ID:-$(date +%s)$$}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-e2e.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
FAILED_NAMES=()

fail() { echo "FAIL: $*" >&2; return 1; }

# sha256 of a file, hex only
sha() { sha256sum "$1" | cut -d' ' -f1; }

# same_file EXPECTED ACTUAL: byte-identical by sha256
same_file() {
    local a b
    a=$(sha "$1"); b=$(sha "$2")
    [[ "$a" == "$b" ]] || fail "sha256 differs: $1 ($a) vs $2 ($b)"
}

# same_tree A B: same relative file list and same sha256 of every file
tree_sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
same_tree() {
    local a b
    a=$(tree_sums "$1"); b=$(tree_sums "$2")
    if [[ "$a" != "$b" ]]; then
        diff <(echo "$a") <(echo "$b") >&2 || true
        fail "trees differ: $1 vs $2"
    fi
}

# grep that reads all its input: `cmd | grep -q` can SIGPIPE cmd, and
# with pipefail that turns a match into a failure.
has() { grep "$@" >/dev/null; }

assert_eq() { # EXPECTED ACTUAL WHAT
    [[ "$1" == "$2" ]] || fail "${3:-value}: expected [$1], got [$2]"
}

gen_tree() { python3 "$E2E_DIR/gen_tree.py" "$@"; }

run_case() {
    local name="$1" t0 rc
    t0=$(date +%s.%N)
    echo "--- case $name"
    set +e
    ( set -euo pipefail; "case_$name" )
    rc=$?
    set -e
    local dt
    dt=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        echo "--- PASS $name (${dt}s)"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        echo "--- FAIL $name (${dt}s, exit $rc)"
    fi
}

finish() {
    local suite="$1"
    if ((FAILED)); then
        echo "$suite failed cases: ${FAILED_NAMES[*]}"
    fi
    echo "$suite: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

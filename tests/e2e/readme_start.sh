#!/usr/bin/env bash
# README's first command, as written, where a newcomer runs it: a fresh
# clone, a fresh CARGO_HOME (crates downloaded again) and a fresh target
# directory. It must build, start, and answer the `aws ... s3 ls` line it
# prints. The build must need nothing but Rust and its C compiler: no
# system library (RocksDB) and no libclang, which is checked on the
# dependency tree and on the binary, whatever this machine has installed.
# Needs git and aws-cli; uses 127.0.0.1:9000-9003, the README's ports.
# Usage: bash tests/e2e/readme_start.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-readme.XXXXXX")"
PGID=""
cleanup() {
    if [ -n "$PGID" ]; then
        kill -INT -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$PGID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "readme_start: FAIL: $*" >&2; tail -n 20 "$WORK/err" >&2 2>/dev/null || true; exit 1; }

# The first command of the first block under "## Start here".
CMD=$(python3 - "$ROOT/README.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"^## Start here\n.*?^```sh\n(.*?)^```", text, re.S | re.M).group(1)
print([l for l in block.splitlines() if l.strip() and not l.startswith("#")][0])
PY
)
echo "readme_start: $CMD"
git clone -q "$ROOT" "$WORK/src"
cd "$WORK/src"
export CARGO_HOME="$WORK/cargo-home"
unset CARGO_TARGET_DIR AWS_CA_BUNDLE AWS_PROFILE AWS_ENDPOINT_URL
started=$SECONDS
setsid bash -c "$CMD" >"$WORK/out" 2>"$WORK/err" &
PGID=$!
until grep -q '^try: ' "$WORK/out" 2>/dev/null; do
    kill -0 "$PGID" 2>/dev/null || fail "the command ended before the store was ready"
    ((SECONDS - started < 2400)) || fail "not ready after 40 minutes"
    sleep 2
done
echo "readme_start: ready after $((SECONDS - started)) s (build included)"
TRY=$(sed -n 's/^try: //p' "$WORK/out")
# The printed line, run as printed; then a bucket made and listed by it.
eval "$TRY" || fail "the printed line failed: $TRY"
eval "${TRY% s3 ls} s3 mb s3://readme-check" >/dev/null || fail "CreateBucket failed"
eval "$TRY" | grep -q readme-check || fail "the new bucket is not listed"
# Nothing in the build reached for a system library or libclang.
TREE=$(cargo tree --workspace -e normal,build --prefix none) || fail "cargo tree failed"
if grep -Eq '^(librocksdb-sys|bindgen|clang-sys) ' <<<"$TREE"; then
    fail "the default build depends on librocksdb-sys, bindgen or clang-sys"
fi
BIN=$(find target/release -maxdepth 1 -name gridstore -type f | head -n 1)
[ -n "$BIN" ] || fail "no target/release/gridstore"
if ldd "$BIN" | grep -v -E 'linux-vdso|ld-linux|/libc\.so|/libm\.so|/libgcc_s\.so'; then
    fail "the binary links more than the C library (above)"
fi
echo "readme_start: ok"

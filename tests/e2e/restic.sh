#!/usr/bin/env bash
# restic backing up to a gridstore S3 endpoint.
# Usage: ENDPOINT=http://127.0.0.1:PORT AK=... SK=... tests/e2e/restic.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_DEFAULT_REGION="$REGION"
unset AWS_SESSION_TOKEN AWS_PROFILE || true
export RESTIC_REPOSITORY="s3:$ENDPOINT/e2e-restic-$RUN_ID"
export RESTIC_PASSWORD="gridstore-e2e-restic-password"
export RESTIC_CACHE_DIR="$WORK/cache"
R=(restic_checked -o s3.bucket-lookup=path -o s3.region="$REGION")

# restic retries failed backend calls by itself (for minutes); a retry means
# the server failed a request, so it fails the case here.
restic_checked() {
    local err="$WORK/restic.stderr" rc=0
    restic "$@" 2>"$err" || rc=$?
    cat "$err" >&2
    if grep -qiE 'retrying|returned error' "$err"; then
        fail "restic $* retried a failed backend call: $(grep -iE 'retrying|returned error' "$err" | head -n 3)"
    fi
    return "$rc"
}
restic version

SRC="$WORK/src"
gen_tree "$SRC" --seed 41
# a larger file so that pack files approach restic's size limit
gen_tree "$SRC/data/big.bin" --file $((9 * 1024 * 1024)) --seed 42
cp -a "$SRC" "$WORK/src-v1"

snapshot_count() { "${R[@]}" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

case_init() {
    "${R[@]}" init
    "${R[@]}" cat config >/dev/null
}

case_backup() {
    "${R[@]}" backup --host e2e "$SRC"
    assert_eq 1 "$(snapshot_count)" "snapshots after the first backup"
}

case_second_backup() {
    gen_tree "$SRC" --modify --seed 41
    "${R[@]}" backup --host e2e "$SRC"
    assert_eq 2 "$(snapshot_count)" "snapshots after the second backup"
}

case_restore_latest() {
    "${R[@]}" restore latest --target "$WORK/restore-latest"
    same_tree "$SRC" "$WORK/restore-latest$SRC"
    diff -r "$SRC" "$WORK/restore-latest$SRC"
}

case_restore_first() {
    local first
    first=$("${R[@]}" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sorted(s, key=lambda x: x["time"])[0]["short_id"])')
    "${R[@]}" restore "$first" --target "$WORK/restore-first"
    same_tree "$WORK/src-v1" "$WORK/restore-first$SRC"
}

case_check_read_data() {
    "${R[@]}" check --read-data
}

case_forget_prune() {
    "${R[@]}" forget --keep-last 1 --prune
    assert_eq 1 "$(snapshot_count)" "snapshots after forget --keep-last 1"
    "${R[@]}" check --read-data
    rm -rf "$WORK/restore-after-prune"
    "${R[@]}" restore latest --target "$WORK/restore-after-prune"
    same_tree "$SRC" "$WORK/restore-after-prune$SRC"
}

for c in init backup second_backup restore_latest restore_first check_read_data forget_prune; do
    run_case "$c"
done
finish restic

#!/usr/bin/env bash
# rclone against a gridstore S3 endpoint, configured only through env vars.
# Usage: ENDPOINT=http://127.0.0.1:PORT AK=... SK=... tests/e2e/rclone.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

export RCLONE_CONFIG="$WORK/rclone.conf"   # empty: the remote comes from the env
: > "$RCLONE_CONFIG"
export RCLONE_CONFIG_GS_TYPE=s3
export RCLONE_CONFIG_GS_PROVIDER=Other
export RCLONE_CONFIG_GS_ENV_AUTH=false
export RCLONE_CONFIG_GS_ACCESS_KEY_ID="$AK"
export RCLONE_CONFIG_GS_SECRET_ACCESS_KEY="$SK"
export RCLONE_CONFIG_GS_ENDPOINT="$ENDPOINT"
export RCLONE_CONFIG_GS_REGION="$REGION"
export RCLONE_CONFIG_GS_FORCE_PATH_STYLE=true
# no retries: a server error must fail the command, not be papered over
RC=(rclone --retries 1 --low-level-retries 1 --stats 0 --contimeout 10s --timeout 120s)
rclone version | sed -n 1p

B="e2e-rclone-$RUN_ID"
gen_tree "$WORK/tree" --seed 31

case_mkdir() {
    "${RC[@]}" mkdir "gs:$B"
    "${RC[@]}" lsd gs: | has -E " $B\$" || fail "bucket $B not in 'rclone lsd gs:'"
}

case_sync_check() {
    "${RC[@]}" sync "$WORK/tree" "gs:$B/tree"
    # compares sizes and MD5 (the ETag of single-part objects)
    "${RC[@]}" check "$WORK/tree" "gs:$B/tree"
    "${RC[@]}" check --download "$WORK/tree" "gs:$B/tree"
    local n want
    want=$(find "$WORK/tree" -type f | wc -l)
    n=$("${RC[@]}" lsf -R --files-only "gs:$B/tree" | wc -l)
    assert_eq "$want" "$n" "files listed by lsf -R"
    "${RC[@]}" lsf -R --files-only "gs:$B/tree" | has -xF "docs/notes with spaces.txt" \
        || fail "'docs/notes with spaces.txt' not listed"
}

case_resync_after_changes() {
    cp -a "$WORK/tree" "$WORK/tree2"
    gen_tree "$WORK/tree2" --modify --seed 31
    "${RC[@]}" sync "$WORK/tree2" "gs:$B/tree"
    "${RC[@]}" check "$WORK/tree2" "gs:$B/tree"
    "${RC[@]}" check --download "$WORK/tree2" "gs:$B/tree"
    # the deleted file is gone remotely too
    local thumbs
    thumbs=$("${RC[@]}" lsf "gs:$B/tree/my photos/thumbs")
    if has -xF t2.bin <<<"$thumbs"; then
        fail "t2.bin deleted locally but still on the remote after sync"
    fi
    # a second sync has nothing to do
    local out
    out=$("${RC[@]}" sync -v "$WORK/tree2" "gs:$B/tree" 2>&1)
    if grep -E 'INFO .*: (Copied|Deleted|Updated)' <<<"$out"; then
        fail "second sync of an unchanged tree changed something"
    fi
}

case_copy_back() {
    "${RC[@]}" copy "gs:$B/tree" "$WORK/back"
    same_tree "$WORK/tree2" "$WORK/back"
    "${RC[@]}" cat "gs:$B/tree/docs/notes with spaces.txt" > "$WORK/cat.out"
    same_file "$WORK/tree2/docs/notes with spaces.txt" "$WORK/cat.out"
}

case_multipart() {
    # above the upload cutoff rclone does a multipart upload (5 MiB parts)
    gen_tree "$WORK/big.bin" --file $((13 * 1024 * 1024 + 17)) --seed 32
    "${RC[@]}" --s3-upload-cutoff 5M --s3-chunk-size 5M copyto "$WORK/big.bin" "gs:$B/big/big.bin"
    "${RC[@]}" copyto "gs:$B/big/big.bin" "$WORK/big.down"
    same_file "$WORK/big.bin" "$WORK/big.down"
    # rclone keeps the MD5 of a multipart upload in X-Amz-Meta-Md5chksum
    local md5
    md5=$("${RC[@]}" md5sum "gs:$B/big/big.bin" | cut -d' ' -f1)
    assert_eq "$(md5sum "$WORK/big.bin" | cut -d' ' -f1)" "$md5" "MD5 rclone reports for the multipart object"
}

case_server_side_ops() {
    "${RC[@]}" copyto "gs:$B/tree/README.txt" "gs:$B/copied/README copy.txt"
    "${RC[@]}" moveto "gs:$B/copied/README copy.txt" "gs:$B/moved/README moved.txt"
    "${RC[@]}" cat "gs:$B/moved/README moved.txt" > "$WORK/moved.out"
    same_file "$WORK/tree2/README.txt" "$WORK/moved.out"
    # an empty prefix is "directory not found" to rclone, so no exit check
    local left
    left=$("${RC[@]}" lsf "gs:$B/copied" 2>/dev/null || true)
    if [[ -n "$left" ]]; then
        fail "moveto left the source behind"
    fi
    local size
    size=$("${RC[@]}" size --json "gs:$B/tree" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
    assert_eq "$(find "$WORK/tree2" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')" "$size" "rclone size bytes"
}

case_purge() {
    "${RC[@]}" delete "gs:$B/tree"
    local n
    n=$("${RC[@]}" lsf -R --files-only "gs:$B/tree" | wc -l)
    assert_eq 0 "$n" "files left after rclone delete"
    "${RC[@]}" purge "gs:$B"
    local buckets
    buckets=$("${RC[@]}" lsd gs:)
    if has -E " $B\$" <<<"$buckets"; then fail "bucket $B still there after purge"; fi
}

for c in mkdir sync_check resync_after_changes copy_back multipart server_side_ops purge; do
    run_case "$c"
done
finish rclone

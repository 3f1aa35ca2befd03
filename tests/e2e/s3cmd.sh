#!/usr/bin/env bash
# s3cmd against a gridstore S3 endpoint, with a generated config file.
# The config leaves bucket_location at s3cmd's default (US), as most
# users' do: s3cmd then signs with the legacy region "US".
# Usage: ENDPOINT=http://127.0.0.1:PORT AK=... SK=... tests/e2e/s3cmd.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

CFG="$WORK/s3cfg"
cat > "$CFG" <<CFG
[default]
access_key = $AK
secret_key = $SK
host_base = $ADDR
host_bucket = $ADDR
use_https = False
signature_v2 = False
check_ssl_certificate = False
multipart_chunk_size_mb = 5
max_retries = 0
progress_meter = False
CFG
S=(s3cmd -c "$CFG" --no-progress)
s3cmd --version

B="e2e-s3cmd-$RUN_ID"
gen_tree "$WORK/small.bin" --file 70000 --seed 51
gen_tree "$WORK/big.bin" --file $((12 * 1024 * 1024 + 3)) --seed 52
gen_tree "$WORK/tree" --seed 53

case_mb() {
    "${S[@]}" mb "s3://$B"
    "${S[@]}" ls | has -E "s3://$B\$" || fail "bucket $B not in 's3cmd ls'"
}

case_put_get() {
    "${S[@]}" put "$WORK/small.bin" "s3://$B/small.bin"
    "${S[@]}" put "$WORK/small.bin" "s3://$B/dir with space/small copy.bin"
    "${S[@]}" get "s3://$B/small.bin" "$WORK/small.down"
    same_file "$WORK/small.bin" "$WORK/small.down"
    "${S[@]}" get "s3://$B/dir with space/small copy.bin" "$WORK/small2.down"
    same_file "$WORK/small.bin" "$WORK/small2.down"
    # info prints the MD5 s3cmd got from the ETag
    "${S[@]}" info "s3://$B/small.bin" | tee "$WORK/info.txt"
    grep -qE "MD5 sum: +$(md5sum "$WORK/small.bin" | cut -d' ' -f1)" "$WORK/info.txt" \
        || fail "s3cmd info does not show the object's MD5"
}

case_put_get_multipart() {
    # above multipart_chunk_size_mb s3cmd uploads 5 MiB parts
    "${S[@]}" put "$WORK/big.bin" "s3://$B/big.bin"
    "${S[@]}" get "s3://$B/big.bin" "$WORK/big.down"
    same_file "$WORK/big.bin" "$WORK/big.down"
}

case_ls() {
    "${S[@]}" ls "s3://$B/" | tee "$WORK/ls.txt"
    grep -qF "s3://$B/small.bin" "$WORK/ls.txt" || fail "small.bin not listed"
    grep -qE "DIR +s3://$B/dir with space/" "$WORK/ls.txt" || fail "'dir with space/' not listed as DIR"
    "${S[@]}" ls --recursive "s3://$B/" | has -F "s3://$B/dir with space/small copy.bin" \
        || fail "recursive ls misses 'dir with space/small copy.bin'"
    "${S[@]}" la | has -F "s3://$B/big.bin" || fail "'s3cmd la' misses big.bin"
    "${S[@]}" du "s3://$B/" | tee "$WORK/du.txt"
}

case_sync_tree() {
    "${S[@]}" sync "$WORK/tree/" "s3://$B/tree/"
    "${S[@]}" sync "s3://$B/tree/" "$WORK/tree-down/"
    same_tree "$WORK/tree" "$WORK/tree-down"
    mkdir -p "$WORK/tree-get"
    "${S[@]}" get --recursive "s3://$B/tree/" "$WORK/tree-get/"
    same_tree "$WORK/tree" "$WORK/tree-get"
}

case_del() {
    "${S[@]}" del "s3://$B/small.bin"
    local out
    out=$("${S[@]}" ls "s3://$B/")
    if has -F "s3://$B/small.bin" <<<"$out"; then fail "small.bin listed after del"; fi
    if "${S[@]}" get "s3://$B/small.bin" "$WORK/gone.down" 2>"$WORK/gone.err"; then
        fail "get after del succeeded"
    fi
    grep -qE '404|NoSuchKey|does not exist' "$WORK/gone.err" || fail "get after del: $(cat "$WORK/gone.err")"
    "${S[@]}" del --recursive --force "s3://$B/"
    local n
    n=$("${S[@]}" ls --recursive "s3://$B/" | wc -l)
    assert_eq 0 "$n" "objects left after del --recursive"
    "${S[@]}" rb "s3://$B"
    out=$("${S[@]}" ls)
    if has -E "s3://$B\$" <<<"$out"; then fail "bucket $B still listed after rb"; fi
}

case_legacy_eu() {
    # An old config's EU: sent as LocationConstraint and as the region of
    # every signature, since s3cmd looks regions up for US only.
    local eu="$B-eu"
    "${S[@]}" --bucket-location=EU mb "s3://$eu"
    "${S[@]}" --bucket-location=EU put "$WORK/small.bin" "s3://$eu/small.bin"
    "${S[@]}" --bucket-location=EU get "s3://$eu/small.bin" "$WORK/eu.down"
    same_file "$WORK/small.bin" "$WORK/eu.down"
    "${S[@]}" --bucket-location=EU del "s3://$eu/small.bin"
    "${S[@]}" --bucket-location=EU rb "s3://$eu"
}

for c in mb put_get put_get_multipart ls sync_tree del legacy_eu; do
    run_case "$c"
done
finish s3cmd

#!/usr/bin/env bash
# WebDAV against gridstore: rclone's webdav backend (sync, check, move,
# delete) with the same tree read back over S3, anonymous refusal, litmus
# (the shared run-litmus.sh), and a 2 GiB upload through a gateway-only
# process whose peak RSS is measured.
#
# Usage: ENDPOINT=http://127.0.0.1:S3PORT DAV_ENDPOINT=http://127.0.0.1:DAVPORT \
#        AK=... SK=... [GRIDSTORE_DATA=DIR GRIDSTORE_BIN=...] tests/e2e/webdav.sh
# GRIDSTORE_DATA is the `gridstore server` data dir: the RSS case starts
# `gridstore gateway` against that server's nodes (its map, identity and
# master key).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

: "${DAV_ENDPOINT:?set DAV_ENDPOINT, e.g. http://127.0.0.1:9001}"
DAV="${DAV_ENDPOINT%/}"
case "${DAV#http://}" in
    127.0.0.1:*|localhost:*) ;;
    *) echo "refusing to target $DAV: only 127.0.0.1 is allowed" >&2; exit 2 ;;
esac
ROOT="$(cd "$E2E_DIR/../.." && pwd)"
LITMUS_SH="${LITMUS_SH:-$ROOT/../shared/tools/webdav/run-litmus.sh}"
BIG_BYTES="${WEBDAV_BIG_BYTES:-$((2 * 1024 * 1024 * 1024))}"
RSS_LIMIT_KB=$((128 * 1024))

export RCLONE_CONFIG="$WORK/rclone.conf"
: > "$RCLONE_CONFIG"
export RCLONE_CONFIG_DAV_TYPE=webdav
export RCLONE_CONFIG_DAV_URL="$DAV/"
export RCLONE_CONFIG_DAV_VENDOR=other
export RCLONE_CONFIG_DAV_USER="$AK"
RCLONE_CONFIG_DAV_PASS="$(rclone obscure "$SK")"
export RCLONE_CONFIG_DAV_PASS
export RCLONE_CONFIG_GS_TYPE=s3
export RCLONE_CONFIG_GS_PROVIDER=Other
export RCLONE_CONFIG_GS_ENV_AUTH=false
export RCLONE_CONFIG_GS_ACCESS_KEY_ID="$AK"
export RCLONE_CONFIG_GS_SECRET_ACCESS_KEY="$SK"
export RCLONE_CONFIG_GS_ENDPOINT="$ENDPOINT"
export RCLONE_CONFIG_GS_REGION="$REGION"
export RCLONE_CONFIG_GS_FORCE_PATH_STYLE=true
RC=(rclone --retries 1 --low-level-retries 1 --stats 0 --contimeout 10s --timeout 120s)
rclone version | sed -n 1p

B="e2e-webdav-$RUN_ID"
gen_tree "$WORK/tree" --seed 41
# Names beyond Latin-1: CJK, emoji, combining marks, RTL.
mkdir -p "$WORK/tree/ünïcødé/日本語 フォルダ" "$WORK/tree/עברית"
printf 'grid\n%.0s' {1..500} > "$WORK/tree/ünïcødé/日本語 フォルダ/ファイル 😀.txt"
head -c 300000 /dev/urandom > "$WORK/tree/עברית/קובץ.bin"

curl_dav() { curl -sS -u "$AK:$SK" "$@"; }

case_refuses_anonymous() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PROPFIND -H 'Depth: 0' "$DAV/")
    assert_eq 401 "$code" "anonymous PROPFIND"
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "$AK:not-the-secret" -X PROPFIND "$DAV/")
    assert_eq 401 "$code" "PROPFIND with a wrong secret"
    code=$(curl -s -o /dev/null -w '%{http_code}' -T /etc/hostname "$DAV/x/y")
    assert_eq 401 "$code" "anonymous PUT"
    curl -s -D - -o /dev/null "$DAV/" | has -i '^www-authenticate: Basic' \
        || fail "no Basic challenge on 401"
}

case_rclone_sync_check() {
    "${RC[@]}" mkdir "dav:$B"
    "${RC[@]}" lsd dav: | has -E " $B\$" || fail "bucket $B not listed at the WebDAV root"
    "${RC[@]}" sync "$WORK/tree" "dav:$B/tree"
    "${RC[@]}" check "$WORK/tree" "dav:$B/tree"
    "${RC[@]}" check --download "$WORK/tree" "dav:$B/tree"
    local want n
    want=$(find "$WORK/tree" -type f | wc -l)
    n=$("${RC[@]}" lsf -R --files-only "dav:$B/tree" | wc -l)
    assert_eq "$want" "$n" "files listed over WebDAV"
}

case_s3_reads_what_webdav_wrote() {
    "${RC[@]}" copy "gs:$B/tree" "$WORK/from-s3"
    same_tree "$WORK/tree" "$WORK/from-s3"
    "${RC[@]}" lsf "gs:$B/tree/ünïcødé/日本語 フォルダ" | has -xF 'ファイル 😀.txt' \
        || fail "unicode key not listed over S3"
}

case_webdav_reads_what_s3_wrote() {
    head -c 123457 /dev/urandom > "$WORK/s3-side.bin"
    "${RC[@]}" copyto "$WORK/s3-side.bin" "gs:$B/from-s3/ŝ3 file.bin"
    curl_dav -f -o "$WORK/dav-side.bin" "$DAV/$B/from-s3/%C5%9D3%20file.bin"
    same_file "$WORK/s3-side.bin" "$WORK/dav-side.bin"
    # a ranged read over WebDAV
    curl_dav -f -r 1000-1999 -o "$WORK/range.bin" "$DAV/$B/from-s3/%C5%9D3%20file.bin"
    cmp <(tail -c +1001 "$WORK/s3-side.bin" | head -c 1000) "$WORK/range.bin" \
        || fail "ranged GET over WebDAV returned other bytes"
}

case_move_folder() {
    "${RC[@]}" moveto "dav:$B/tree/docs" "dav:$B/moved/docs"
    "${RC[@]}" check "$WORK/tree/docs" "dav:$B/moved/docs"
    if "${RC[@]}" lsf "dav:$B/tree" | has -xF 'docs/'; then
        fail "docs/ still in the source after the move"
    fi
    # S3 sees the moved keys and none of the old ones
    "${RC[@]}" copy "gs:$B/moved/docs" "$WORK/moved-from-s3"
    same_tree "$WORK/tree/docs" "$WORK/moved-from-s3"
    local left
    left=$("${RC[@]}" lsf -R "gs:$B/tree/docs" 2>/dev/null | wc -l)
    assert_eq 0 "$left" "keys left under tree/docs/ over S3"
}

case_delete_folder() {
    "${RC[@]}" purge "dav:$B/moved"
    local code left
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "$AK:$SK" -X PROPFIND -H 'Depth: 0' "$DAV/$B/moved/")
    assert_eq 404 "$code" "PROPFIND of the deleted folder"
    left=$("${RC[@]}" lsf -R "gs:$B/moved" 2>/dev/null | wc -l)
    assert_eq 0 "$left" "keys left under moved/ over S3"
}

case_litmus() {
    [[ -x "$LITMUS_SH" || -f "$LITMUS_SH" ]] || fail "litmus runner not found at $LITMUS_SH"
    local lb="e2e-litmus-$RUN_ID" out
    curl_dav -f -X MKCOL "$DAV/$lb" -o /dev/null
    out=$(LITMUS_OUT="$WORK/litmus" bash "$LITMUS_SH" "$DAV/$lb/" "$AK" "$SK" 2>&1) || {
        echo "$out"
        for s in basic copymove props locks http; do
            grep -E 'FAIL|WARNING' "$WORK/litmus/$s.out" 2>/dev/null | sed "s/^/$s: /" || true
        done
        fail "litmus reported failures"
    }
    echo "$out"
    for s in basic copymove props locks http; do
        has -E "^$s: [0-9]+ passed, 0 failed" <<<"$out" || fail "litmus suite $s did not pass"
    done
}

# Peak RSS of a gateway-only process (nodes stay in the server process)
# while 2 GiB stream through its WebDAV listener.
case_big_upload_rss() {
    : "${GRIDSTORE_DATA:?set GRIDSTORE_DATA (data dir of gridstore server) for the RSS case}"
    local bin="${GRIDSTORE_BIN:-$ROOT/target/debug/gridstore}"
    local s3p davp jobp
    s3p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    davp=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    jobp=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 - "$GRIDSTORE_DATA" "$WORK/gw.toml" "$s3p" "$davp" "$jobp" <<'EOF'
import sys, tomllib
data, out, s3p, davp, jobp = sys.argv[1:]
s = tomllib.load(open(f"{data}/server.toml", "rb"))
open(out, "w").write(
    f'listen = "127.0.0.1:{s3p}"\nwebdav_listen = "127.0.0.1:{davp}"\n'
    f'jobs_listen = "127.0.0.1:{jobp}"\n'
    f'admin_listen = "127.0.0.1:0"\n'
    f'cluster_map = "{data}/cluster-map.toml"\n'
    # The server's gateway identity: the one its cluster map trusts.
    f'identity_dir = "{data}/identity"\n'
    f'master_key = "{s["master_key"]}"\n')
EOF
    # glibc keeps up to 8 malloc arenas per core; two bound what freed
    # chunk buffers can pin (see docs/benchmarks.md, "WebDAV gateway memory").
    MALLOC_ARENA_MAX=2 "$bin" gateway --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 &
    local gw=$!
    trap 'kill -TERM '"$gw"' 2>/dev/null || true' EXIT
    local i
    for i in $(seq 1 60); do
        has -F "WebDAV on http://127.0.0.1:$davp/" "$WORK/gw.log" && break
        kill -0 "$gw" || { cat "$WORK/gw.log"; fail "gateway exited"; }
        sleep 0.5
    done
    has -F "WebDAV on" "$WORK/gw.log" || { cat "$WORK/gw.log"; fail "gateway not ready"; }
    local t0 md5 etag hwm
    t0=$(date +%s)
    head -c "$BIG_BYTES" /dev/urandom | tee >(md5sum | cut -d' ' -f1 > "$WORK/big.md5") \
        | curl -sS -f -u "$AK:$SK" -T - -o /dev/null "http://127.0.0.1:$davp/$B/big.bin"
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$gw/status")
    sleep 0.5
    md5=$(cat "$WORK/big.md5")
    etag=$(curl -sS -I -u "$AK:$SK" "$DAV/$B/big.bin" | tr -d '\r"' | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p')
    assert_eq "$md5" "$etag" "ETag (MD5) of the 2 GiB upload"
    local size
    size=$("${RC[@]}" size --json "gs:$B/big.bin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
    assert_eq "$BIG_BYTES" "$size" "size over S3"
    echo "2 GiB WebDAV upload: $(( $(date +%s) - t0 ))s, gateway peak RSS (VmHWM) $((hwm / 1024)) MiB"
    kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
    trap - EXIT
    curl_dav -f -X DELETE "$DAV/$B/big.bin" -o /dev/null
    ((hwm < RSS_LIMIT_KB)) || fail "gateway peak RSS $((hwm / 1024)) MiB >= 128 MiB"
}

run_case refuses_anonymous
run_case rclone_sync_check
run_case s3_reads_what_webdav_wrote
run_case webdav_reads_what_s3_wrote
run_case move_folder
run_case delete_folder
run_case litmus
run_case big_upload_rss
finish webdav

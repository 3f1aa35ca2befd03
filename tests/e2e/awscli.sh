#!/usr/bin/env bash
# aws-cli (s3 and s3api) against a gridstore S3 endpoint.
# Usage: ENDPOINT=http://127.0.0.1:PORT AK=... SK=... tests/e2e/awscli.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

# A private config: nothing from ~/.aws leaks in, nothing is written there.
export AWS_CONFIG_FILE="$WORK/aws-config"
export AWS_SHARED_CREDENTIALS_FILE="$WORK/aws-credentials"
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 || true
export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_DEFAULT_REGION="$REGION"
aws configure set default.region "$REGION"
aws configure set default.s3.addressing_style path
aws configure set default.s3.multipart_threshold 8MB
aws configure set default.s3.multipart_chunksize 8MB
# no retries: a server error or a stalled response must fail the command,
# not be retried away
aws configure set default.max_attempts 1
aws configure set default.retry_mode standard
# a profile that sends one request at a time (so over one connection)
aws configure set profile.serial.region "$REGION"
aws configure set profile.serial.s3.addressing_style path
aws configure set profile.serial.s3.max_concurrent_requests 1
aws configure set profile.serial.max_attempts 1
aws configure set profile.serial.aws_access_key_id "$AK"   # a named profile ignores the env keys
aws configure set profile.serial.aws_secret_access_key "$SK"
aws --version

awsc() { aws --endpoint-url "$ENDPOINT" "$@"; }
# s3 transfer commands without the progress meter (it floods logs)
s3t() { local op="$1"; shift; aws --endpoint-url "$ENDPOINT" s3 "$op" --no-progress "$@"; }

B="e2e-awscli-$RUN_ID"
BV="e2e-awscli-ver-$RUN_ID"
SMALL="$WORK/small.bin"
BIG="$WORK/big-20MiB.bin"
gen_tree "$SMALL" --file 100000 --seed 11
gen_tree "$BIG" --file $((20 * 1024 * 1024)) --seed 12
gen_tree "$WORK/tree" --seed 13

md5hex() { md5sum "$1" | cut -d' ' -f1; }
# S3's multipart ETag: md5 of the concatenated part md5s, "-" part count.
multipart_etag() { # FILE PART_SIZE
    python3 - "$1" "$2" <<'PY'
import hashlib, sys
path, part = sys.argv[1], int(sys.argv[2])
digests, n = b"", 0
with open(path, "rb") as f:
    while True:
        b = f.read(part)
        if not b:
            break
        digests += hashlib.md5(b).digest()
        n += 1
print(f"{hashlib.md5(digests).hexdigest()}-{n}")
PY
}

case_mb() {
    awsc s3 mb "s3://$B"
    awsc s3 ls | has -E " $B\$" || fail "bucket $B not in 'aws s3 ls'"
    awsc s3api head-bucket --bucket "$B"
}

case_cp_small() {
    s3t cp "$SMALL" "s3://$B/small.bin"
    s3t cp "s3://$B/small.bin" "$WORK/small.down"
    same_file "$SMALL" "$WORK/small.down"
    local len etag
    len=$(awsc s3api head-object --bucket "$B" --key small.bin --query ContentLength --output text)
    assert_eq 100000 "$len" "ContentLength"
    etag=$(awsc s3api head-object --bucket "$B" --key small.bin --query ETag --output text)
    assert_eq "\"$(md5hex "$SMALL")\"" "$etag" "ETag of a single-part object"
    # streaming from stdin and to stdout
    s3t cp - "s3://$B/from-stdin.bin" < "$SMALL"
    s3t cp "s3://$B/from-stdin.bin" - > "$WORK/stdout.down"
    same_file "$SMALL" "$WORK/stdout.down"
}

case_empty_file_then_file() {
    # The aws-cli sends "Expect: 100-continue" with every file body, even an
    # empty one. If the server answers that request without "100 Continue"
    # (legal for an empty body), the aws-cli's bundled botocore keeps the
    # status line on the pooled connection and misreads the next Expect
    # request's response (boto/botocore#3755, fixed in the botocore that
    # boto3 1.44 uses, not in aws-cli 1.x's): it waits for the read timeout
    # (60 s by default) and retries. One connection; each empty file is
    # followed by a non-empty one (uploaded in name order).
    mkdir -p "$WORK/expect"
    : > "$WORK/expect/1-empty"
    head -c 50000 "$SMALL" > "$WORK/expect/2-data"
    : > "$WORK/expect/3-empty"
    tail -c 40000 "$SMALL" > "$WORK/expect/4-data"
    local t0 rc=0
    t0=$SECONDS
    aws --profile serial --endpoint-url "$ENDPOINT" --cli-read-timeout 15 \
        s3 cp --no-progress --recursive "$WORK/expect" "s3://$B/expect/" || rc=$?
    if ((rc != 0)); then
        if ((SECONDS - t0 >= 14)); then
            fail "uploading an empty file then a non-empty one over one connection hit the read" \
                "timeout ($((SECONDS - t0))s): the PUT of the empty file was answered without" \
                "'100 Continue' and aws-cli's botocore misparses the next response on that" \
                "connection (boto/botocore#3755); 'aws s3 sync' stalls 60 s per empty file"
        fi
        fail "uploading an empty file then a non-empty one failed (exit $rc)"
    fi
    s3t cp --recursive "s3://$B/expect/" "$WORK/expect.down"
    same_tree "$WORK/expect" "$WORK/expect.down"
}

case_cp_multipart() {
    s3t cp "$BIG" "s3://$B/big.bin"
    local len etag want
    len=$(awsc s3api head-object --bucket "$B" --key big.bin --query ContentLength --output text)
    assert_eq $((20 * 1024 * 1024)) "$len" "ContentLength"
    etag=$(awsc s3api head-object --bucket "$B" --key big.bin --query ETag --output text)
    want=$(multipart_etag "$BIG" $((8 * 1024 * 1024)))
    assert_eq "\"$want\"" "$etag" "multipart ETag (3 parts of 8 MiB)"
    s3t cp "s3://$B/big.bin" "$WORK/big.down"
    same_file "$BIG" "$WORK/big.down"
    # server-side copy of a multipart object
    s3t cp "s3://$B/big.bin" "s3://$B/big-copy.bin"
    s3t cp "s3://$B/big-copy.bin" "$WORK/big-copy.down"
    same_file "$BIG" "$WORK/big-copy.down"
}

case_sync() {
    s3t sync "$WORK/tree" "s3://$B/tree/"
    # nothing changed: a second sync must transfer nothing
    local out
    out=$(s3t sync "$WORK/tree" "s3://$B/tree/")
    [[ -z "$out" ]] || fail "second sync of an unchanged tree transferred: $out"
    s3t sync "s3://$B/tree/" "$WORK/tree-down"
    same_tree "$WORK/tree" "$WORK/tree-down"
    # change, add, delete; sync with --delete both ways
    cp -a "$WORK/tree" "$WORK/tree2"
    gen_tree "$WORK/tree2" --modify --seed 13
    s3t sync --delete "$WORK/tree2" "s3://$B/tree2/"
    s3t sync --delete "$WORK/tree2" "s3://$B/tree/"
    # --exact-timestamps: by default the CLI skips same-sized downloads
    # unless the local copy is newer (img 001.raw keeps its size)
    s3t sync --delete --exact-timestamps "s3://$B/tree/" "$WORK/tree-down"
    same_tree "$WORK/tree2" "$WORK/tree-down"
}

case_ls() {
    local n want
    want=$(find "$WORK/tree2" -type f | wc -l)
    n=$(awsc s3 ls "s3://$B/tree/" --recursive | wc -l)
    assert_eq "$want" "$n" "objects listed under tree/"
    awsc s3 ls "s3://$B/tree/" > "$WORK/ls.txt"
    cat "$WORK/ls.txt"
    for p in "docs/" "my photos/" "data/" "nested/" "added dir/"; do
        grep -qF "PRE $p" "$WORK/ls.txt" || fail "no 'PRE $p' in listing of tree/"
    done
    grep -qF "README.txt" "$WORK/ls.txt" || fail "README.txt not listed at tree/"
    awsc s3 ls "s3://$B/tree/docs/" | has -F "notes with spaces.txt" \
        || fail "'notes with spaces.txt' not listed under tree/docs/"
    # s3api with a small page size: the CLI follows continuation tokens
    n=$(awsc s3api list-objects-v2 --bucket "$B" --prefix tree/ --page-size 3 \
        --query 'length(Contents)' --output json)
    assert_eq "$want" "$n" "list-objects-v2 --page-size 3 total"
}

case_presign() {
    local url code
    url=$(awsc s3 presign "s3://$B/small.bin" --expires-in 300)
    echo "$url"
    [[ "$url" == "$ENDPOINT/$B/small.bin?"* ]] || fail "presigned URL not path-style on $ENDPOINT: $url"
    curl -fsS -o "$WORK/presigned.down" "$url"
    same_file "$SMALL" "$WORK/presigned.down"
    # a tampered signature is refused
    local bad="${url%?}"
    if [[ "${url: -1}" == "0" ]]; then bad="${bad}1"; else bad="${bad}0"; fi
    code=$(curl -sS -o "$WORK/bad.xml" -w '%{http_code}' "$bad")
    assert_eq 403 "$code" "HTTP status of a tampered presigned URL"
    grep -q SignatureDoesNotMatch "$WORK/bad.xml" || fail "tampered URL: no SignatureDoesNotMatch: $(cat "$WORK/bad.xml")"
    # an expired URL is refused
    url=$(awsc s3 presign "s3://$B/small.bin" --expires-in 1)
    sleep 2
    code=$(curl -sS -o "$WORK/exp.xml" -w '%{http_code}' "$url")
    assert_eq 403 "$code" "HTTP status of an expired presigned URL"
    # a presigned URL for a missing key gives 404
    url=$(awsc s3 presign "s3://$B/no-such-key" --expires-in 300)
    code=$(curl -sS -o "$WORK/missing.xml" -w '%{http_code}' "$url")
    assert_eq 404 "$code" "HTTP status of a presigned GET of a missing key"
}

case_range() {
    local cr
    cr=$(awsc s3api get-object --bucket "$B" --key small.bin --range bytes=100-1099 \
        "$WORK/range.out" --query ContentRange --output text)
    assert_eq "bytes 100-1099/100000" "$cr" "ContentRange"
    dd if="$SMALL" of="$WORK/range.want" bs=1 skip=100 count=1000 status=none
    same_file "$WORK/range.want" "$WORK/range.out"
    # suffix range
    awsc s3api get-object --bucket "$B" --key small.bin --range bytes=-500 "$WORK/suffix.out" >/dev/null
    tail -c 500 "$SMALL" > "$WORK/suffix.want"
    same_file "$WORK/suffix.want" "$WORK/suffix.out"
    # open-ended range
    awsc s3api get-object --bucket "$B" --key small.bin --range bytes=99000- "$WORK/open.out" >/dev/null
    tail -c 1000 "$SMALL" > "$WORK/open.want"
    same_file "$WORK/open.want" "$WORK/open.out"
    # across a part boundary of the multipart object (parts of 8 MiB)
    local s=$((8 * 1024 * 1024 - 5000))
    awsc s3api get-object --bucket "$B" --key big.bin --range "bytes=$s-$((s + 9999))" "$WORK/cross.out" >/dev/null
    python3 -c "import sys; f=open(sys.argv[1],'rb'); f.seek($s); sys.stdout.buffer.write(f.read(10000))" "$BIG" > "$WORK/cross.want"
    same_file "$WORK/cross.want" "$WORK/cross.out"
}

case_versioning() {
    awsc s3 mb "s3://$BV"
    awsc s3api put-bucket-versioning --bucket "$BV" --versioning-configuration Status=Enabled
    local st v1 v2 dm n latest
    st=$(awsc s3api get-bucket-versioning --bucket "$BV" --query Status --output text)
    assert_eq Enabled "$st" "versioning status"
    gen_tree "$WORK/v1.bin" --file 50000 --seed 21
    gen_tree "$WORK/v2.bin" --file 60000 --seed 22
    v1=$(awsc s3api put-object --bucket "$BV" --key doc.bin --body "$WORK/v1.bin" --query VersionId --output text)
    v2=$(awsc s3api put-object --bucket "$BV" --key doc.bin --body "$WORK/v2.bin" --query VersionId --output text)
    echo "versions: $v1 $v2"
    [[ -n "$v1" && "$v1" != None && "$v1" != null ]] || fail "first put returned no VersionId"
    [[ -n "$v2" && "$v2" != None && "$v2" != null ]] || fail "second put returned no VersionId"
    [[ "$v1" != "$v2" ]] || fail "both puts returned VersionId $v1"
    awsc s3api list-object-versions --bucket "$BV" --prefix doc.bin > "$WORK/versions.json"
    cat "$WORK/versions.json"
    n=$(awsc s3api list-object-versions --bucket "$BV" --prefix doc.bin --query 'length(Versions)' --output text)
    assert_eq 2 "$n" "number of versions"
    latest=$(awsc s3api list-object-versions --bucket "$BV" --prefix doc.bin \
        --query 'Versions[?IsLatest].VersionId | [0]' --output text)
    assert_eq "$v2" "$latest" "IsLatest version"
    awsc s3api get-object --bucket "$BV" --key doc.bin --version-id "$v1" "$WORK/v1.down" >/dev/null
    same_file "$WORK/v1.bin" "$WORK/v1.down"
    awsc s3api get-object --bucket "$BV" --key doc.bin "$WORK/latest.down" >/dev/null
    same_file "$WORK/v2.bin" "$WORK/latest.down"
    # delete without a version id writes a delete marker
    dm=$(awsc s3api delete-object --bucket "$BV" --key doc.bin --query VersionId --output text)
    if awsc s3api get-object --bucket "$BV" --key doc.bin "$WORK/gone.down" 2>"$WORK/gone.err"; then
        fail "GET after a delete marker succeeded"
    fi
    grep -q NoSuchKey "$WORK/gone.err" || fail "GET after delete marker: $(cat "$WORK/gone.err")"
    n=$(awsc s3api list-object-versions --bucket "$BV" --prefix doc.bin --query 'length(DeleteMarkers)' --output text)
    assert_eq 1 "$n" "number of delete markers"
    awsc s3api get-object --bucket "$BV" --key doc.bin --version-id "$v1" "$WORK/v1b.down" >/dev/null
    same_file "$WORK/v1.bin" "$WORK/v1b.down"
    # removing the marker brings v2 back
    awsc s3api delete-object --bucket "$BV" --key doc.bin --version-id "$dm" >/dev/null
    awsc s3api get-object --bucket "$BV" --key doc.bin "$WORK/back.down" >/dev/null
    same_file "$WORK/v2.bin" "$WORK/back.down"
    # clean up every version, then the bucket
    for v in "$v1" "$v2"; do
        awsc s3api delete-object --bucket "$BV" --key doc.bin --version-id "$v" >/dev/null
    done
    # shellcheck disable=SC2016 # backticks are a JMESPath literal
    n=$(awsc s3api list-object-versions --bucket "$BV" --query 'length(Versions || `[]`)' --output text)
    assert_eq 0 "$n" "versions left after deleting all"
    awsc s3 rb "s3://$BV"
}

case_rm_recursive() {
    awsc s3 rm "s3://$B/tree" --recursive
    local n
    n=$(awsc s3 ls "s3://$B/tree/" --recursive | wc -l || true)
    assert_eq 0 "$n" "objects left under tree/ after rm --recursive"
    # the other prefixes are untouched
    awsc s3api head-object --bucket "$B" --key tree2/README.txt >/dev/null
    awsc s3 rb --force "s3://$B"
    local buckets
    buckets=$(awsc s3 ls)
    if has -E " $B\$" <<<"$buckets"; then fail "bucket $B still listed after rb --force"; fi
}

for c in mb cp_small empty_file_then_file cp_multipart sync ls presign range versioning rm_recursive; do
    run_case "$c"
done
finish awscli

#!/usr/bin/env bash
# What a second version of a file costs, uploaded by real clients: a 64 MiB
# file, then the same with 1 KiB inserted in the middle, each uploaded to a
# versioned bucket of a fresh `gridstore server`, counting the shard bytes
# the second version adds once garbage collection has removed what no
# reference names (the chunks of parts that completion re-cut). Each
# client gets its own bucket (chunks dedup within a bucket).
#
# usage: benches/multipart-dedup.sh
#
# environment:
#   GRIDSTORE   the binary (default target/release/gridstore)
#   AWS         aws-cli (default: aws on PATH)
#   SIZE_MIB    the file's size (default 64)
#
# Needs aws-cli and rclone. Stops what it starts and removes its data.
set -euo pipefail
cd "$(dirname "$0")/.."
GRIDSTORE="${GRIDSTORE:-target/release/gridstore}"
AWS="${AWS:-aws}"
SIZE_MIB="${SIZE_MIB:-64}"
S3=127.0.0.1:9700
work="$(mktemp -d -t gridstore-dedup.XXXXXX)"
pid=""
cleanup() {
    set +e
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Short collection timers so the count settles within seconds.
"$GRIDSTORE" server "$work/grid" --listen "$S3" --webdav-listen 127.0.0.1:9701 \
    --jobs-listen 127.0.0.1:9702 --admin-listen 127.0.0.1:0 --gc-grace-secs 5 --gc-interval-secs 2 \
    >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q '^secret key:' "$work/log" 2>/dev/null && break
    sleep 0.2
done
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
AWS_ACCESS_KEY_ID=$(sed -n 's/^access key: //p' "$work/log")
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret key: //p' "$work/log")
export RCLONE_CONFIG_GS_TYPE=s3 RCLONE_CONFIG_GS_PROVIDER=Other \
    RCLONE_CONFIG_GS_ENDPOINT="http://$S3" RCLONE_CONFIG_GS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
    RCLONE_CONFIG_GS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
aws() { "$AWS" --endpoint-url "http://$S3" "$@"; }

python3 - "$work" "$SIZE_MIB" <<'EOF'
import os, random, sys
work, mib = sys.argv[1], int(sys.argv[2])
a = random.Random(7).randbytes(mib << 20)
mid = len(a) // 2 + 12345
b = a[:mid] + random.Random(8).randbytes(1024) + a[mid:]
open(f"{work}/v1", "wb").write(a)
open(f"{work}/v2", "wb").write(b)
EOF

shard_bytes() {
    find "$work/grid" -path '*/shards/*' -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}
# Wait until collection has removed what no reference names: the
# stitch after completion, the gateway's sweep of references the
# manifest no longer names and the nodes' collection each wait a grace
# period or an interval, so the count must stay the same for 24 s.
settled() {
    local last=-1 now same=0
    for _ in $(seq 150); do
        sleep 4
        now=$(shard_bytes)
        if [[ "$now" == "$last" ]]; then
            same=$((same + 1))
            ((same >= 6)) && break
        else
            same=0
        fi
        last=$now
    done
    echo "$now"
}

upload() { # how file bucket
    case $1 in
    put) aws s3api put-object --bucket "$3" --key f --body "$2" >/dev/null ;;
    cp) aws s3 cp --quiet "$2" "s3://$3/f" ;;
    rclone) env -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null rclone copyto --s3-upload-cutoff 5M "$2" "gs:$3/f" ;;
    esac
}

echo "| first upload | second upload | parts | first version's shard bytes | the second adds |"
echo "|---|---|---|---|---|"
for pair in "put put" "cp cp" "rclone rclone" "put cp" "cp put"; do
    read -r one two <<<"$pair"
    bucket="dedup-$one-$two"
    aws s3api create-bucket --bucket "$bucket" >/dev/null
    aws s3api put-bucket-versioning --bucket "$bucket" \
        --versioning-configuration Status=Enabled
    empty=$(settled)
    upload "$one" "$work/v1" "$bucket"
    first=$(settled)
    upload "$two" "$work/v2" "$bucket"
    second=$(settled)
    parts=$(aws s3api head-object --bucket "$bucket" --key f --query PartsCount --output text --part-number 1 2>/dev/null || echo 1)
    python3 -c "
import sys
e, f, s = map(int, sys.argv[1:4])
print(f'| {sys.argv[4]} | {sys.argv[5]} | {sys.argv[6]} | {(f - e) / 2**20:.1f} MiB | {(s - f) / (f - e) * 100:.2f} % |')
" "$empty" "$first" "$second" "$one" "$two" "$parts"
    # Both versions read back.
    aws s3 cp --quiet "s3://$bucket/f" "$work/back"
    cmp -s "$work/back" "$work/v2" || { echo "the second version reads back wrong" >&2; exit 1; }
done

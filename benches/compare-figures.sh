#!/usr/bin/env bash
# Two builds of gridstore side by side on the S3 cases that matter for a
# change to the data path: 4 KiB PUT and GET, 64 MiB PUT and GET, a 1,000-key
# ListObjectsV2, and ListObjectsV2 of one folder (prefix + delimiter) in a
# bucket of 100,000 keys. Each build serves from its own fresh `gridstore
# server`; the load generator is always the second build's `gridstore bench
# s3`, so only the server differs. Cases alternate between the builds so a
# noisy neighbour hits both. Nothing is asserted; figures are for reading.
#
# usage: benches/compare-figures.sh OLD_BINARY NEW_BINARY [--quick]
#
#   --quick   short cases and 2,000 keys instead of 100,000: checks the harness
#
# environment:
#   CASES      the cases to run, by name (default all: put-4k get-4k put-64m
#              get-64m list-1000 list-folder)
#   DATA_DIR   parent of the servers' temp dirs (default $TMPDIR or /tmp)
#   OUT        where the JSON lines and the table go (default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 2 ]] || { sed -n '2,18p' "$0" >&2; exit 2; }
OLD="$1" NEW="$2" QUICK=0
[[ "${3:-}" == --quick ]] && QUICK=1
for b in "$OLD" "$NEW"; do
    [[ -x "$b" ]] || { echo "missing $b" >&2; exit 2; }
done
OUT="${OUT:-$(mktemp -d -t gridstore-compare.XXXXXX)}"
mkdir -p "$OUT"
pids=() dirs=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# start NAME BINARY PORT: a fresh server; sets ${NAME}_KEY and ${NAME}_SECRET
start() {
    local name=$1 bin=$2 port=$3 dir
    dir="$(mktemp -d -p "${DATA_DIR:-${TMPDIR:-/tmp}}" "gridstore-$name.XXXXXX")"
    dirs+=("$dir")
    # Two servers run at once: each its own admin port, where the build
    # has an admin listener at all.
    local admin=()
    "$bin" server --help 2>/dev/null | grep -q -- --admin-listen && admin=(--admin-listen 127.0.0.1:0)
    "$bin" server "$dir/grid" --listen "127.0.0.1:$port" \
        --webdav-listen "127.0.0.1:$((port + 1))" --jobs-listen "127.0.0.1:$((port + 2))" \
        "${admin[@]}" >"$OUT/$name-server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 150); do
        grep -q '^secret key:' "$OUT/$name-server.log" 2>/dev/null && break
        sleep 0.2
    done
    printf -v "${name}_KEY" '%s' "$(sed -n 's/^access key: //p' "$OUT/$name-server.log")"
    printf -v "${name}_SECRET" '%s' "$(sed -n 's/^secret key: //p' "$OUT/$name-server.log")"
}

start old "$OLD" 9600
start new "$NEW" 9610
old_PID=${pids[0]} new_PID=${pids[1]}

# CPU seconds the server process has used so far (user + system).
cpu_s() {
    awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$1/stat"
}

if [[ $QUICK == 1 ]]; then
    short=2s long=3s keys=2000 folders=20
else
    short=15s long=20s keys=100000 folders=100
fi

CASES="${CASES:-put-4k get-4k put-64m get-64m list-1000 list-folder}"

# case NAME ARGS...: run the case against both servers, old first
case_() {
    local name=$1; shift
    [[ " $CASES " == *" $name "* ]] || return 0
    for side in old new; do
        local port=9600 key=$old_KEY secret=$old_SECRET pid=$old_PID
        [[ $side == new ]] && port=9610 key=$new_KEY secret=$new_SECRET pid=$new_PID
        local before
        before=$(cpu_s "$pid")
        GRIDSTORE_ACCESS_KEY="$key" GRIDSTORE_SECRET_KEY="$secret" \
            "$NEW" bench s3 --endpoint "http://127.0.0.1:$port" --json "$@" \
            >"$OUT/$side-$name.json" 2>>"$OUT/$side-$name.err" || echo "$side $name failed" >&2
        # Server CPU over the whole case (preparing and cleaning up too).
        echo "$before $(cpu_s "$pid")" >"$OUT/$side-$name.cpu"
    done
}

case_ put-4k --op put --size 4KiB --concurrency 16 --duration "$short" --bucket b-small
case_ get-4k --op get --size 4KiB --concurrency 16 --duration "$short" --bucket b-small
case_ put-64m --op put --size 64MiB --concurrency 1 --duration "$long" --bucket b-large
case_ get-64m --op get --size 64MiB --concurrency 1 --duration "$long" --objects 4 --bucket b-large
case_ list-1000 --op list --size 1 --concurrency 1 --duration "$short" --objects 1000 --bucket b-list
case_ list-folder --op list --size 1 --concurrency 1 --duration "$short" --objects "$keys" \
    --folders "$folders" --bucket b-tree

python3 - "$OUT" <<'EOF'
import json, sys, os
out = sys.argv[1]
rows = [("put-4k", "PUT 4 KiB × 16", "ops_per_s"), ("get-4k", "GET 4 KiB × 16", "ops_per_s"),
        ("put-64m", "PUT 64 MiB × 1", "mib_per_s"), ("get-64m", "GET 64 MiB × 1", "mib_per_s"),
        ("list-1000", "LIST 1,000 keys", "ops_per_s"), ("list-folder", "LIST folder of a big bucket", "ops_per_s")]
def load(side, name):
    p = os.path.join(out, f"{side}-{name}.json")
    try:
        return json.load(open(p))
    except Exception:
        return None
def cpu(side, name):
    try:
        a, b = map(float, open(os.path.join(out, f"{side}-{name}.cpu")).read().split())
        return b - a
    except Exception:
        return None
print("| case | unit | old | new | new / old | p50 / p99 ms old | new | server CPU s old | new |")
print("|---|---|---|---|---|---|---|---|---|")
for name, label, field in rows:
    o, n = load("old", name), load("new", name)
    def get(r, f):
        return None if r is None else r.get(f)
    a, b = get(o, field), get(n, field)
    ratio = f"{b / a:.2f}" if a and b else "-"
    lat = lambda r: "-" if r is None else f"{r.get('p50_ms', 0):.1f} / {r.get('p99_ms', 0):.1f}"
    unit = "ops/s" if field == "ops_per_s" else "MiB/s"
    fa = "-" if a is None else f"{a:,.1f}"
    fb = "-" if b is None else f"{b:,.1f}"
    co, cn = cpu("old", name), cpu("new", name)
    fc = lambda c: "-" if c is None else f"{c:.1f}"
    print(f"| {label} | {unit} | {fa} | {fb} | {ratio} | {lat(o)} | {lat(n)} | {fc(co)} | {fc(cn)} |")
EOF
echo "(JSON in $OUT)"

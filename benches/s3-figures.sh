#!/usr/bin/env bash
# The S3 figures of docs/benchmarks.md in one run: `gridstore bench s3` against a fresh
# `gridstore server` and against a loopback reference server
# (benches/examples/s3_null_server.rs: the same s3s protocol layer and
# hyper, SigV4 checked, bodies discarded and GETs served from a zeroed
# block: no storage work at all), interleaved case by case so a
# noisy neighbour hits both sides of each ratio, plus `gridstore bench
# codec` for the codec-only ceiling. Nothing is asserted; figures are for
# reading.
#
# usage: benches/s3-figures.sh [--quick]
#
#   --quick   1 s per case, few objects: checks the harness, not figures
#
# environment:
#   GRIDSTORE       the binary        (default target/release/gridstore)
#   S3REF           reference server  (default target/release/examples/s3_null_server;
#                   cargo build --release -p gridstore-bench --example s3_null_server)
#   S3_LISTEN       gridstore server's S3 address   (default 127.0.0.1:9500)
#   DAV_LISTEN      its WebDAV address              (default 127.0.0.1:9501)
#   REF_LISTEN      reference server's address      (default 127.0.0.1:9510)
#   DATA_DIR        parent of the server's temp dir (default $TMPDIR or /tmp: a real disk)
#   OUT             where the JSON lines and the table go (default a temp dir, printed)
#
# Stops what it starts (by PID) and removes its data on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == --quick ]] && QUICK=1
GRIDSTORE="${GRIDSTORE:-target/release/gridstore}"
S3REF="${S3REF:-target/release/examples/s3_null_server}"
S3_LISTEN="${S3_LISTEN:-127.0.0.1:9500}"
DAV_LISTEN="${DAV_LISTEN:-127.0.0.1:9501}"
JOBS_LISTEN="${JOBS_LISTEN:-127.0.0.1:9502}"
REF_LISTEN="${REF_LISTEN:-127.0.0.1:9510}"
for b in "$GRIDSTORE" "$S3REF"; do
    [[ -x "$b" ]] || { echo "missing $b (build it in release mode first)" >&2; exit 2; }
done
OUT="${OUT:-$(mktemp -d -t gridstore-s3-figures.XXXXXX)}"
mkdir -p "$OUT"
data="$(mktemp -d -p "${DATA_DIR:-${TMPDIR:-/tmp}}" gridstore-s3-bench.XXXXXX)"
server_pid="" ref_pid=""
cleanup() {
    set +e
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [[ -n "$ref_pid" ]] && kill "$ref_pid" 2>/dev/null && wait "$ref_pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT

"$GRIDSTORE" server "$data/grid" --listen "$S3_LISTEN" --webdav-listen "$DAV_LISTEN" --jobs-listen "$JOBS_LISTEN" \
    --admin-listen 127.0.0.1:0 >"$OUT/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    grep -q '^secret key:' "$OUT/server.log" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.2
done
access=$(sed -n 's/^access key: //p' "$OUT/server.log")
secret=$(sed -n 's/^secret key: //p' "$OUT/server.log")
[[ -n "$access" && -n "$secret" ]] || { echo "no credentials from the server" >&2; exit 1; }

# The reference gets its own random credentials; signatures are checked.
ref_access="ref$RANDOM$RANDOM"
ref_secret="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
"$S3REF" "$REF_LISTEN" "$ref_access" "$ref_secret" >"$OUT/ref.log" 2>&1 &
ref_pid=$!
sleep 0.5
kill -0 "$ref_pid" 2>/dev/null || { cat "$OUT/ref.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); out $OUT" >&2
echo "== codec ceiling: gridstore bench codec" >&2
if ((QUICK)); then
    "$GRIDSTORE" bench codec --json --quick >"$OUT/codec.json"
else
    "$GRIDSTORE" bench codec --json >"$OUT/codec.json"
fi

# size concurrency op duration objects
cases=(
    "4KiB 1 put 10s 200"  "4KiB 16 put 10s 200"
    "4KiB 1 get 10s 200"  "4KiB 16 get 10s 200"
    "4KiB 16 mixed 10s 200" "4KiB 1 list 10s 1000"
    "64MiB 1 put 20s 16"  "64MiB 16 put 30s 16"
    "64MiB 1 get 20s 16"  "64MiB 16 get 30s 16"
)
: >"$OUT/runs.jsonl"
for c in "${cases[@]}"; do
    read -r size conc op dur objects <<<"$c"
    if ((QUICK)); then dur=1s; objects=$((objects > 16 ? 16 : objects)); fi
    for target in ref gridstore; do
        if [[ $target == ref ]]; then
            ep="http://$REF_LISTEN" ak="$ref_access" sk="$ref_secret"
        else
            ep="http://$S3_LISTEN" ak="$access" sk="$secret"
        fi
        echo "== $target: $op $size x$conc for $dur" >&2
        # A failed run is recorded as such and the others go on.
        if out=$(GRIDSTORE_ACCESS_KEY="$ak" GRIDSTORE_SECRET_KEY="$sk" "$GRIDSTORE" bench s3 \
            --endpoint "$ep" --op "$op" --size "$size" --concurrency "$conc" \
            --duration "$dur" --objects "$objects" --timeout 300s --json); then
            line=$(printf '%s' "$out" | tr -d '\n')
        else
            line='{"failed":true}'
        fi
        printf '{"target":"%s","case":"%s %s x%s","run":%s}\n' \
            "$target" "$op" "$size" "$conc" "$line" >>"$OUT/runs.jsonl"
    done
done

python3 - "$OUT/codec.json" "$OUT/runs.jsonl" <<'EOF' | tee "$OUT/table.md"
import json, sys
codec = json.load(open(sys.argv[1]))
runs = [json.loads(l) for l in open(sys.argv[2])]
by = {}
for r in runs:
    by.setdefault(r["case"], {})[r["target"]] = r["run"]
MB = 1e9 / (1 << 20)  # GB/s -> MiB/s
# The ceiling is the better of one and two threads: on a shared machine
# the second core is often busy and two threads measure below one.
seal1, seal2 = codec["id_seal_gbps"] * MB, codec["id_seal_2threads_gbps"] * MB
open1, open2 = codec["open_gbps"] * MB, codec["open_2threads_gbps"] * MB
seal_ceil, open_ceil = max(seal1, seal2), max(open1, open2)
print(f"codec ceiling (RS 4+2, random data, 1 MiB chunks; the better of 1 and 2 threads): "
      f"id+seal {seal_ceil:.0f} MiB/s (1 thread {seal1:.0f}, 2 threads {seal2:.0f}), "
      f"open {open_ceil:.0f} MiB/s (1 thread {open1:.0f}, 2 threads {open2:.0f}); "
      f"AEAD 2-thread scaling {codec['aead_2threads_scaling']:.2f}\n")
print("| case | gridstore ops/s | MiB/s | p50 / p99 ms | loopback ref ops/s | MiB/s "
      "| p50 / p99 ms | gridstore / ref | gridstore / codec |")
print("|---|---|---|---|---|---|---|---|---|")
for case, t in by.items():
    g, f = t.get("gridstore", {}), t.get("ref", {})
    def cell(r):
        if r.get("failed") or not r.get("ops"):
            return "failed", "", ""
        err = f" ({r['errors']} errors)" if r.get("errors") else ""
        return (f"{r['ops_per_s']:.1f}{err}", f"{r['mib_per_s']:.1f}",
                f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}")
    gc, fc = cell(g), cell(f)
    ratio = codec_ratio = ""
    if g.get("ops") and f.get("ops"):
        ratio = f"{g['ops_per_s'] / f['ops_per_s']:.2f}"
    op, size = case.split()[0], case.split()[1]
    if g.get("ops") and size != "4KiB" and op in ("put", "get"):
        ceil = seal_ceil if op == "put" else open_ceil
        codec_ratio = f"{g['mib_per_s'] / ceil:.2f}"
    print(f"| {case} | {gc[0]} | {gc[1]} | {gc[2]} | {fc[0]} | {fc[1]} | {fc[2]} "
          f"| {ratio} | {codec_ratio} |")
failed = [f"{r['target']} {r['case']}" for r in runs if r["run"].get("failed")]
if failed:
    print("\nfailed runs: " + ", ".join(failed), file=sys.stderr)
    sys.exit(1)
EOF
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

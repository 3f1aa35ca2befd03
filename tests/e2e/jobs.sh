#!/usr/bin/env bash
# The job runner end to end on a real `gridstore server`: 500
# generated text objects, a Python word-count map (shipped as an object)
# and reduce checked against a count computed here; the same map on
# random nodes for the locality baseline; a failing task (exit code and
# stderr); a task over its time limit; a task trying to read a shard file.
# Needs aws-cli and python3. Usage: bash tests/e2e/jobs.sh [path/to/gridstore]
set -euo pipefail
BIN="${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/debug/gridstore}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
README="$(cd "$(dirname "$0")/../.." && pwd)/README.md"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-jobs-e2e.XXXXXX")"
PID=""
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3=$(port); DAV=$(port); JOBS=$(port)
start_server() {
    "$BIN" server "$WORK/data" --listen 127.0.0.1:$S3 --webdav-listen 127.0.0.1:$DAV \
        --jobs-listen 127.0.0.1:$JOBS --admin-listen 127.0.0.1:0 --job-allow python3 >"$WORK/server.out" 2>>"$WORK/server.err" &
    PID=$!
    for _ in $(seq 150); do grep -q "^secret key" "$WORK/server.out" 2>/dev/null && return; sleep 0.2; done
    cat "$WORK/server.err" >&2
    fail "server did not start"
}
fail() { echo "FAIL: $*" >&2; exit 1; }
start_server
export AWS_ACCESS_KEY_ID=$(awk '/^access key:/{print $3}' "$WORK/server.out")
export AWS_SECRET_ACCESS_KEY=$(awk '/^secret key:/{print $3}' "$WORK/server.out")
export AWS_DEFAULT_REGION=us-east-1 NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
unset AWS_CA_BUNDLE
export GRIDSTORE_JOBS_ENDPOINT=http://127.0.0.1:$JOBS
aws() { command aws --endpoint-url "http://127.0.0.1:$S3" "$@"; }
job() { "$BIN" job "$@"; }

# 500 objects of 20-30 KiB (above the 16 KiB inline threshold, so each
# has erasure-coded shards) and the expected word count.
python3 - "$WORK/in" "$WORK/expected" <<'PY'
import os, random, sys, collections
out, expected = sys.argv[1], sys.argv[2]
words = "grid shard farm site chunk parity node repair scrub object bucket job data mining".split()
os.makedirs(out)
total = collections.Counter()
for i in range(500):
    r = random.Random(i)
    n = r.randint(20 << 10, 30 << 10)
    text, size = [], 0
    while size < n:
        w = r.choice(words)
        text.append(w); size += len(w) + 1; total[w] += 1
    with open(f"{out}/{i:04d}.txt", "w") as f:
        f.write(" ".join(text) + "\n")
with open(expected, "w") as f:
    for w in sorted(total):
        f.write(f"{w}\t{total[w]}\n")
PY
cat >"$WORK/wc.py" <<'PY'
import sys, collections
c = collections.Counter(sys.stdin.read().split())
for w in sorted(c):
    print(f"{w}\t{c[w]}")
PY
cat >"$WORK/sum.py" <<'PY'
import sys, collections
c = collections.Counter()
for line in sys.stdin:
    w, n = line.rstrip("\n").split("\t")
    c[w] += int(n)
for w in sorted(c):
    print(f"{w}\t{c[w]}")
PY
aws s3 mb s3://corpus >/dev/null
aws s3 mb s3://results >/dev/null
aws s3 sync --quiet "$WORK/in" s3://corpus/text/
aws s3 cp --quiet "$WORK/wc.py" s3://corpus/code/wc.py
aws s3 cp --quiet "$WORK/sum.py" s3://corpus/code/sum.py

echo "== word count, scheduler's placement"
job submit --bucket corpus --prefix text/ --out results/wc --file corpus/code/wc.py \
    --reduce "python3 sum.py" --reduce-file corpus/code/sum.py --wait -- python3 wc.py \
    | tee "$WORK/wc.status"
aws s3 cp --quiet s3://results/wc/_reduce "$WORK/reduced"
cmp "$WORK/reduced" "$WORK/expected" || fail "reduce output differs from the count computed here"
grep -q "500 total: 0 pending, 0 running, 500 done" "$WORK/wc.status" || fail "not 500 tasks done"
echo "reduce output equals the direct count"

echo "== the same map on random nodes (baseline)"
job submit --bucket corpus --prefix text/ --out results/wc-random --file corpus/code/wc.py \
    --placement random --wait -- python3 wc.py | tee "$WORK/random.status"
python3 - "$WORK/wc.status" "$WORK/random.status" <<'PY'
import re, sys
def fr(path):
    t = open(path).read()
    disk = float(re.search(r"own disk: ([\d.]+) %", t).group(1))
    site = float(re.search(r"own site: ([\d.]+) %", t).group(1))
    ceil = [float(x) for x in re.findall(r"ceiling ([\d.]+) %", t)]
    return disk, site, ceil
d, s, (cd, cs) = fr(sys.argv[1])
rd, rs, _ = fr(sys.argv[2])
print(f"scheduler: own disk {d} % (ceiling {cd} %), own site {s} % (ceiling {cs} %)")
print(f"random:    own disk {rd} %, own site {rs} %; ratios {d/rd:.2f}x disk, {s/rs:.2f}x site")
assert d >= 0.9 * cd and s >= 0.9 * cs, "scheduler below 90 % of the ceiling"
assert d > rd and s > rs, "scheduler not better than random"
PY

echo "== a failing task"
aws s3 cp --quiet "$WORK/in/0000.txt" s3://corpus/one/0000.txt
if job submit --bucket corpus --prefix one/ --out results/fail --wait -- \
    python3 -c 'import sys; sys.stderr.write("no good\n"); sys.exit(4)' >"$WORK/fail.status"; then
    fail "a failing job reported success"
fi
grep -q "exited with code 4" "$WORK/fail.status" || fail "exit code not reported"
ID=$(head -1 "$WORK/fail.status")
job logs "$ID" | grep -q "no good" || fail "stderr not kept"
echo "failed task reported with its stderr"

echo "== a task over its time limit"
if job submit --bucket corpus --prefix one/ --out results/slow --timeout-secs 2 --wait -- \
    python3 -c 'import time; time.sleep(60)' >"$WORK/slow.status"; then
    fail "a timed-out job reported success"
fi
grep -q "over its time limit" "$WORK/slow.status" || fail "time limit not reported"
echo "timed-out task killed and reported"

echo "== a task reading a shard file"
SHARD=$(find "$WORK/data" -path '*shards*' -type f -print -quit)
[ -n "$SHARD" ] || fail "no shard file found"
job submit --bucket corpus --prefix one/ --out results/probe --wait -- python3 -c "
import sys
try:
    open('$SHARD', 'rb').read(1); print('READ')
except OSError as e:
    print('refused', type(e).__name__)" >/dev/null || fail "probe job failed"
aws s3 cp --quiet s3://results/probe/one/0000.txt "$WORK/probe.out"
cat "$WORK/probe.out"
grep -q "^refused" "$WORK/probe.out" || fail "a task read a shard file"
echo "== the server killed with SIGKILL mid-job, then started again"
# Outputs in a versioned bucket, so a second write of any would show.
aws s3 mb s3://kept >/dev/null
aws s3api put-bucket-versioning --bucket kept --versioning-configuration Status=Enabled
printf 'import time\ntime.sleep(0.1)\n' | cat - "$WORK/wc.py" >"$WORK/slow_wc.py"
aws s3 cp --quiet "$WORK/slow_wc.py" s3://corpus/code/slow_wc.py
ID=$(job submit --bucket corpus --prefix text/ --out kept/wc --file corpus/code/slow_wc.py \
    --reduce "python3 sum.py" --reduce-file corpus/code/sum.py --per-node 1 -- python3 slow_wc.py)
done_now() { job status "$ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["done"])'; }
for _ in $(seq 300); do [ "$(done_now)" -ge 60 ] && break; sleep 0.2; done
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
echo "server killed mid-job"
start_server
job status "$ID" --wait | tee "$WORK/kept.status"
grep -q "): done" "$WORK/kept.status" || fail "the job did not finish after the restart"
grep -q "500 total: 0 pending, 0 running, 500 done" "$WORK/kept.status" || fail "not 500 tasks done"
aws s3 cp --quiet s3://kept/wc/_reduce "$WORK/kept.reduced"
cmp "$WORK/kept.reduced" "$WORK/expected" || fail "reduce output after the restart differs"
aws s3api list-object-versions --bucket kept --prefix wc/ --output json >"$WORK/kept.versions"
python3 - "$WORK/kept.versions" <<'PY'
import collections, json, sys
v = json.load(open(sys.argv[1]))
keys = collections.Counter(x["Key"] for x in v.get("Versions", []))
twice = {k: n for k, n in keys.items() if n > 1}
assert not twice, f"outputs written more than once: {twice}"
assert len(keys) == 502, f"{len(keys)} outputs (500 maps, the reduce, the summary expected)"
print(f"{len(keys)} outputs, each written once")
PY
job list | grep -q "$ID" || fail "the job is not listed after the restart"

echo "== README's jobs example, as written, on a fresh server"
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
rm -rf "$WORK/data"
S3=$(port); DAV=$(port); JOBS=$(port)
export GRIDSTORE_JOBS_ENDPOINT=http://127.0.0.1:$JOBS
start_server
export AWS_ACCESS_KEY_ID=$(awk '/^access key:/{print $3}' "$WORK/server.out")
export AWS_SECRET_ACCESS_KEY=$(awk '/^secret key:/{print $3}' "$WORK/server.out")
# The block under "## Jobs", with three lines changed: the binary's
# directory on PATH, the credentials already exported, this server's port.
python3 - "$README" "$(dirname "$BIN")" "$S3" >"$WORK/readme-job.sh" <<'PY'
import re, sys
readme, bindir, port = sys.argv[1:4]
text = open(readme).read()
block = re.search(r"^## Jobs\n.*?^```sh\n(.*?)^```", text, re.S | re.M).group(1)
lines = []
for line in block.splitlines():
    if line.startswith("export PATH="):
        line = f'export PATH="{bindir}:$PATH"'
    elif line.startswith("export AWS_ACCESS_KEY_ID="):
        continue
    lines.append(line.replace("127.0.0.1:9000", f"127.0.0.1:{port}"))
print("\n".join(lines))
PY
mkdir -p "$WORK/readme" && (cd "$WORK/readme" && bash -eu "$WORK/readme-job.sh") >"$WORK/readme.out" 2>&1 ||
    { tail -n 20 "$WORK/readme.out"; fail "README's jobs example failed"; }
printf 'chunk\t15000\nfarm\t15000\ngrid\t15000\nshard\t15000\nsite\t15000\n' >"$WORK/readme.expected"
tail -n 5 "$WORK/readme.out" | cmp - "$WORK/readme.expected" ||
    { tail -n 20 "$WORK/readme.out"; fail "README's jobs example printed another count"; }
echo "README's jobs example gives its documented count"
echo "all job checks passed"

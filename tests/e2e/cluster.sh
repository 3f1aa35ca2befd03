#!/usr/bin/env bash
# A grid of separate processes, brought up as README's "Running separate
# processes" documents: six `gridstore node` processes on three sites (two
# per site) and two `gridstore gateway` processes, each from its own config
# file, identities printed with `--identity` and pinned in the cluster map,
# an access key made with `gridstore admin key create`. A recorded S3 load
# (boto3: PUTs of random objects of mixed sizes, GETs of acknowledged ones
# checked by sha256) runs against both gateways while processes are killed:
#
#   cluster-up               the processes start, the map reaches the nodes,
#                            `admin key create` and CreateBucket work
#   gateway-crash-leftovers  kill -9 a gateway in the middle of a large PUT
#                            and of a multipart upload; restart it; the
#                            leftovers are swept within the configured grace
#   node-kill-repair         kill -9 a node, restart it; redundancy returns
#                            to full by itself (`admin repair status`)
#   node-sigstop-p99         SIGSTOP a node for 30 s under the load: p99 GET
#                            and PUT latency of requests started meanwhile
#                            under 2 s
#   job-takeover             a 500-object word count submitted through one
#                            gateway, that gateway killed with SIGKILL
#                            mid-job: the other finishes it, every count
#                            exact, no output written twice, and both
#                            gateways report the same status
#   readback                 every acknowledged object reads back with its
#                            sha256 through both gateways; no load GET saw
#                            wrong data
#   no-panics                no process log shows a panic, none died
#
# They run in this order: the crash leftovers first, on a grid no fault has
# touched yet, so that no rebuild moves the shard count that case watches.
#
# Usage: bash tests/e2e/cluster.sh path/to/gridstore
# Each case prints `PASS name detail` or `FAIL name detail`; the last line
# is `N passed, N failed`, and the exit status is non-zero if a case failed.
# Needs python3 with boto3 (the venv .ci/run installs at
# /opt/gridstore-e2e-venv, used when present), curl and 16 free 127.0.0.1
# ports from CLUSTER_E2E_PORT_BASE (default 27410; below the kernel's
# ephemeral range, so outgoing connections do not take them).
# CLUSTER_E2E_KEEP=1 keeps the temp dir (configs, data, logs, load records).
set -uo pipefail

if [[ $# -ne 1 || ! -x "$1" ]]; then
    echo "usage: $0 path/to/gridstore (an executable)" >&2
    exit 2
fi
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
VENV="${GRIDSTORE_E2E_VENV:-/opt/gridstore-e2e-venv}"
PY=python3
[[ -x "$VENV/bin/python3" ]] && PY="$VENV/bin/python3"
PORT_BASE="${CLUSTER_E2E_PORT_BASE:-27410}"

# Short timers, so that what takes a day in production takes seconds here.
# Nodes: heartbeats every second, a peer unreachable for 5 s is down;
# reconciliation every 5 s; unreferenced shards deleted 10 s after they
# lost their last reference, gc passes every 5 s.
HEARTBEAT_SECS=1
DOWN_AFTER_SECS=5
RECONCILE_SECS=5
GC_GRACE_SECS=10
GC_INTERVAL_SECS=5
# Gateways: housekeeping every 5 s (the lease lapses after three rounds),
# a crashed write's chunk references removed once 20 s old (above the
# longest write of the load), multipart uploads aborted once 30 s old.
HOUSEKEEPING_SECS=5
ORPHAN_GRACE_SECS=20
UPLOAD_MAX_AGE_SECS=30
# How long redundancy may take to come back after a node restart.
REPAIR_BOUND_SECS=120
STOP_SECS=30

export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
unset AWS_CA_BUNDLE AWS_PROFILE AWS_ENDPOINT_URL
# README: gateways run with MALLOC_ARENA_MAX=2.
export MALLOC_ARENA_MAX=2

T_START=$SECONDS
W="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-cluster-e2e.XXXXXX")"
mkdir -p "$W/logs" "$W/load"
declare -A PID=()    # process name -> pid of what runs now
declare -A STARTS=() # process name -> times started (log lines to wait for)
LOAD_PID=""
CRASH_PID=""
PASSED=0
FAILED=0
CLEANED=""

say() { printf '[%s +%3ds] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - T_START))" "$*"; }
now() { date +%s.%N; }
pass() { PASSED=$((PASSED + 1)); echo "PASS $1 $2"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 $2"; }

# Stop every process this script started (SIGCONT first: one may be
# stopped), SIGTERM, then SIGKILL what is left after 15 s. Silent, so
# that the summary stays the last line.
cleanup() {
    [[ -n "$CLEANED" ]] && return 0
    CLEANED=1
    local pids=() p
    for p in "$LOAD_PID" "$CRASH_PID" "${PID[@]}"; do
        [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && pids+=("$p")
    done
    for p in "${pids[@]}"; do
        kill -CONT "$p" 2>/dev/null
        kill -TERM "$p" 2>/dev/null
    done
    local deadline=$((SECONDS + 15))
    for p in "${pids[@]}"; do
        while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [[ "${CLUSTER_E2E_KEEP:-}" == 1 ]]; then
        echo "kept $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Diagnostics for a failed run: the warnings and errors of every log.
dump_logs() {
    local f
    for f in "$W"/logs/*.log; do
        [[ -e "$f" ]] || continue
        echo "----- $(basename "$f"): last warnings/errors"
        grep -E ' (WARN|ERROR) |panicked|Traceback' "$f" | grep -v 's3s::ops' | tail -n 8
    done
}

summary() {
    say "run took $((SECONDS - T_START)) s"
    ((FAILED)) && dump_logs
    cleanup
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
    exit
}

# ---------------------------------------------------------------- helpers

node_port() { echo $((PORT_BASE + $1)); }      # n1..n6: base+1..base+6
gw_port() { echo $((PORT_BASE + 7 + 3 * $1 + ${2:-0})); } # gwG: S3, +1 WebDAV, +2 jobs

start_node() { # I
    local n="n$1"
    "$BIN" node --config "$W/$n/node.toml" >>"$W/logs/$n.log" 2>&1 &
    PID[$n]=$!
    STARTS[$n]=$((${STARTS[$n]:-0} + 1))
}

start_gateway() { # G
    local g="gw$1"
    "$BIN" gateway --config "$W/$g/gw.toml" >>"$W/logs/$g.log" 2>&1 &
    PID[$g]=$!
    STARTS[$g]=$((${STARTS[$g]:-0} + 1))
}

# wait_line NAME PATTERN SECONDS: the process's log holds as many lines
# matching PATTERN as it was started, and it is still running.
wait_line() {
    local name="$1" pattern="$2" deadline=$((SECONDS + $3)) n
    while ((SECONDS < deadline)); do
        n=$(grep -c -- "$pattern" "$W/logs/$name.log" 2>/dev/null)
        ((${n:-0} >= STARTS[$name])) && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || { echo "$name exited before printing '$pattern'" >&2; return 1; }
        sleep 0.2
    done
    echo "$name printed no '$pattern' within $3 s" >&2
    return 1
}

kill9() { # NAME
    kill -KILL "${PID[$1]}" 2>/dev/null
    wait "${PID[$1]}" 2>/dev/null
    PID[$1]=""
}

admin() { timeout 30 "$BIN" admin --config "$W/gw2/gw.toml" "$@"; }

# Sum of the shards every node holds (`gridstore admin status`), or
# nothing when a node is not up.
shard_total() {
    admin status --json 2>/dev/null | "$PY" -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
if len(nodes) == 6 and all(n["up"] for n in nodes):
    print(sum(n["shards"] for n in nodes))' 2>/dev/null
}

# `gridstore admin repair status` summed over the nodes: "down missing
# rebuilding damaged rebuilt handed_back oldest" where oldest is the
# epoch second of the least recent reconciliation pass among the nodes
# (0 if one has never finished one).
repair_summary() {
    admin repair status --json 2>/dev/null | "$PY" -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
up = [n for n in nodes if n["answered"] and n["state"] == "up" and n["repair"]]
figures = [n["repair"] for n in up]
total = lambda f: sum(r[f] for r in figures)
oldest = min(((r["last_reconcile_ms"] or 0) // 1000 for r in figures), default=0)
if len(nodes) == 6:
    print(len(nodes) - len(up), total("missing"), total("rebuilding"),
          total("damaged_chunks"), total("rebuilt_shards"), total("handed_back"), oldest)' 2>/dev/null
}

# node_state ID: its state in the map the nodes hold (up, down, ...).
node_state() { admin node list 2>/dev/null | awk -F'\t' -v id="$1" '$1 == id { print $4 }'; }

metric_sum() { # METRIC: summed over the nodes' /metrics (TLS, no client certificate)
    local i s=0 v
    for i in 1 2 3 4 5 6; do
        v=$(curl -sk --max-time 5 "https://127.0.0.1:$(node_port "$i")/metrics" |
            awk -v m="$1" '$1 == m { print $2 }')
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

load_pause() { # wait until the load has nothing in flight
    touch "$W/load/pause"
    local deadline=$((SECONDS + 90))
    while [[ ! -e "$W/load/idle" ]] && ((SECONDS < deadline)); do sleep 0.1; done
    [[ -e "$W/load/idle" ]]
}
load_resume() { rm -f "$W/load/pause"; }
acked_count() { cat "$W/load/acked.tsv" 2>/dev/null | wc -l; }

# load_window T0 T1: requests of the load that started in [T0, T1).
load_window() { "$PY" "$W/tool.py" window "$W/load" "$1" "$2"; }

# ---------------------------------------------------------------- python

cat >"$W/tool.py" <<'PY'
"""Load and checks for cluster.sh (boto3; plain http to 127.0.0.1)."""
import hashlib, os, random, sys, threading, time, http.client, urllib.parse
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CFG = Config(region_name="us-east-1", retries={"total_max_attempts": 1},
             connect_timeout=5, read_timeout=60, s3={"addressing_style": "path"})

def client(endpoint, ak, sk):
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, config=CFG)

def err_name(e):
    if isinstance(e, ClientError):
        return "ClientError:" + e.response.get("Error", {}).get("Code", "?")
    return type(e).__name__

def load(endpoints, bucket, out, ak, sk, workers, pace):
    """Until OUT/stop exists: PUTs of random objects (every acknowledged one
    recorded with its sha256 in acked.tsv) and GETs of acknowledged objects
    (checked by sha256; wrong data or a missing object in bad.tsv), each
    request in requests.tsv: op, start (epoch s), latency (s), ok, gateway,
    size, error. Nothing is started while OUT/pause exists; OUT/idle says
    that nothing is in flight then. OUT/oldest: the start of the oldest
    request in flight (or "none")."""
    endpoints = endpoints.split(",")
    workers, pace = int(workers), float(pace)
    path = lambda n: os.path.join(out, n)
    lock = threading.Lock()
    acked, busy = [], {}
    req_f = open(path("requests.tsv"), "a", buffering=1)
    ack_f = open(path("acked.tsv"), "a", buffering=1)
    bad_f = open(path("bad.tsv"), "a", buffering=1)

    def record(op, start, lat, ok, gw, size, err=""):
        with lock:
            req_f.write(f"{op}\t{start:.3f}\t{lat:.4f}\t{int(ok)}\t{gw}\t{size}\t{err}\n")

    def pick_size(r):
        x = r.random()
        if x < 0.5:
            return r.randint(0, 16 << 10)        # sealed inside the metadata record
        if x < 0.85:
            return r.randint(16 << 10, 512 << 10)  # one chunk
        return r.randint(1 << 20, 5 << 19)       # 1 - 2.5 MiB: several chunks

    def worker(i):
        r = random.Random(f"{os.getpid()}-{i}")
        cs = [client(e, ak, sk) for e in endpoints]
        seq = 0
        while not os.path.exists(path("stop")):
            with lock:
                busy[i] = time.time()
            if os.path.exists(path("pause")):
                with lock:
                    busy.pop(i, None)
                time.sleep(0.05)
                continue
            gw = r.randrange(len(endpoints))
            with lock:
                n = len(acked)
                pick = acked[r.randrange(n)] if n else None
            if n < 10 or r.random() < 0.5:
                seq += 1
                key = f"load/w{i}/{seq:05d}-{r.getrandbits(32):08x}"
                body = os.urandom(pick_size(r))
                sha = hashlib.sha256(body).hexdigest()
                start = time.time()
                with lock:
                    busy[i] = start
                try:
                    cs[gw].put_object(Bucket=bucket, Key=key, Body=body)
                    lat = time.time() - start
                    with lock:
                        acked.append((key, sha, len(body)))
                        ack_f.write(f"{key}\t{sha}\t{len(body)}\t{gw}\n")
                    record("PUT", start, lat, True, gw, len(body))
                except Exception as e:
                    record("PUT", start, time.time() - start, False, gw, len(body), err_name(e))
            else:
                key, sha, size = pick
                start = time.time()
                with lock:
                    busy[i] = start
                try:
                    data = cs[gw].get_object(Bucket=bucket, Key=key)["Body"].read()
                    lat = time.time() - start
                    got = hashlib.sha256(data).hexdigest()
                    if got != sha:
                        with lock:
                            bad_f.write(f"{key}\twrong data through gateway {gw}: sha256 {got}, {len(data)} bytes; want {sha}, {size}\n")
                        record("GET", start, lat, False, gw, size, "WRONG-DATA")
                    else:
                        record("GET", start, lat, True, gw, size)
                except Exception as e:
                    name = err_name(e)
                    if name == "ClientError:NoSuchKey":
                        with lock:
                            bad_f.write(f"{key}\tacknowledged but NoSuchKey through gateway {gw}\n")
                    record("GET", start, time.time() - start, False, gw, size, name)
            with lock:
                busy.pop(i, None)
            time.sleep(r.uniform(0, 2 * pace))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()

    def put_file(name, text):
        tmp = path(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path(name))

    while any(t.is_alive() for t in threads):
        with lock:
            oldest = min(busy.values()) if busy else None
            idle = not busy
        put_file("oldest", "none" if oldest is None else f"{oldest:.3f}")
        if idle and os.path.exists(path("pause")):
            put_file("idle", "")
        elif os.path.exists(path("idle")):
            os.remove(path("idle"))
        time.sleep(0.1)
    print(f"load stopped: {len(acked)} objects acknowledged")

def window(out, t0, t1):
    """p99 latency of the GETs and PUTs that started in [t0, t1)."""
    t0, t1 = float(t0), float(t1)
    lat = {"GET": [], "PUT": []}
    errs = {"GET": 0, "PUT": 0}
    for line in open(os.path.join(out, "requests.tsv")):
        op, start, l, ok, gw, size, err = line.rstrip("\n").split("\t")
        if t0 <= float(start) < t1:
            lat[op].append(float(l))
            errs[op] += ok != "1"
    parts = []
    for op in ("GET", "PUT"):
        xs = sorted(lat[op])
        if xs:
            p99 = xs[max(0, -(-99 * len(xs) // 100) - 1)]  # nearest rank
            parts.append(f"{op} p99 {p99:.3f} s max {xs[-1]:.3f} s n {len(xs)} errors {errs[op]}")
        else:
            parts.append(f"{op} p99 - n 0")
    print("; ".join(parts))

def p99s(out, t0, t1):
    """The two p99s alone, for the shell ("-" when no request)."""
    t0, t1 = float(t0), float(t1)
    lat = {"GET": [], "PUT": []}
    for line in open(os.path.join(out, "requests.tsv")):
        op, start, l = line.split("\t")[:3]
        if t0 <= float(start) < t1:
            lat[op].append(float(l))
    res = []
    for op in ("GET", "PUT"):
        xs = sorted(lat[op])
        res.append(f"{xs[max(0, -(-99 * len(xs) // 100) - 1)]:.3f}" if xs else "-")
    print(" ".join(res))

class UnsignedPayload(S3SigV4Auth):
    # Stream a body of known length without hashing it first.
    def _should_sha256_sign_payload(self, request):
        return False

def slow_put(endpoint, ak, sk, path_query, total, rate, progress):
    """PUT `total` random bytes at about `rate` bytes/s, counting what was
    sent in `progress`; ends when the body is sent or the connection dies."""
    u = urllib.parse.urlsplit(endpoint)
    req = AWSRequest(method="PUT", url=endpoint + path_query, headers={"Content-Length": str(total)})
    UnsignedPayload(Credentials(ak, sk), "s3", "us-east-1").add_auth(req)
    sent, t0 = 0, time.time()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        c.putrequest("PUT", path_query, skip_accept_encoding=True)
        for k, v in req.headers.items():
            c.putheader(k, v)
        c.endheaders()
        while sent < total:
            block = os.urandom(min(1 << 20, total - sent))
            c.send(block)
            sent += len(block)
            with open(progress, "w") as f:
                f.write(str(sent))
            ahead = sent / rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)
        r = c.getresponse()
        return f"completed with HTTP {r.status} after {sent} bytes"
    except Exception as e:
        return f"connection ended after {sent} bytes ({type(e).__name__})"

def crash(endpoint, bucket, ak, sk, out):
    """The writes a gateway crash interrupts: a multipart upload with parts
    1 and 2 uploaded and part 3 being sent, and a 200 MiB PUT being sent,
    both slowly, until the gateway dies."""
    s3 = client(endpoint, ak, sk)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="crash/multipart")["UploadId"]
    open(os.path.join(out, "upload_id"), "w").write(uid)
    for n in (1, 2):
        s3.upload_part(Bucket=bucket, Key="crash/multipart", UploadId=uid, PartNumber=n,
                       Body=os.urandom(5 << 20))
    open(os.path.join(out, "parts_done"), "w").write("2")
    results = {}
    q = urllib.parse.quote(uid, safe="")
    jobs = {
        "big": (f"/{bucket}/crash/big", 200 << 20, 8 << 20),
        "part3": (f"/{bucket}/crash/multipart?partNumber=3&uploadId={q}", 32 << 20, 2 << 20),
    }
    threads = [threading.Thread(target=lambda n=n, j=j: results.__setitem__(
        n, slow_put(endpoint, ak, sk, j[0], j[1], j[2], os.path.join(out, n + ".bytes"))))
        for n, j in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in jobs:
        print(f"{n}: {results[n]}")

def uploads(endpoint, bucket, ak, sk):
    """The upload ids ListMultipartUploads lists."""
    r = client(endpoint, ak, sk).list_multipart_uploads(Bucket=bucket)
    for u in r.get("Uploads", []):
        print(u["UploadId"])

def make_bucket(endpoint, bucket, ak, sk):
    client(endpoint, ak, sk).create_bucket(Bucket=bucket)

def verify(acked_file, bucket, ak, sk, *endpoints):
    """Every acknowledged object through every endpoint, by sha256."""
    from concurrent.futures import ThreadPoolExecutor
    objs = [l.rstrip("\n").split("\t") for l in open(acked_file) if l.strip()]
    local = threading.local()
    def one(job):
        (key, sha, size, _), (gi, ep) = job
        if not hasattr(local, "cs"):
            local.cs = {}
        if ep not in local.cs:
            local.cs[ep] = client(ep, ak, sk)
        c = local.cs[ep]
        for attempt in range(3):
            try:
                data = c.get_object(Bucket=bucket, Key=key)["Body"].read()
                got = hashlib.sha256(data).hexdigest()
                return None if got == sha else f"{key} via gateway {gi + 1}: sha256 {got[:16]}.. ({len(data)} bytes), want {sha[:16]}.. ({size} bytes)"
            except Exception as e:
                last = err_name(e)
                if last == "ClientError:NoSuchKey":
                    break
                time.sleep(1)
        return f"{key} via gateway {gi + 1}: {last}"
    jobs = [(o, g) for o in objs for g in enumerate(endpoints)]
    with ThreadPoolExecutor(4) as ex:
        bad = [r for r in ex.map(one, jobs) if r]
    total = sum(int(o[2]) for o in objs)
    print(f"{len(objs)} objects ({total / 1048576:.1f} MiB) x {len(endpoints)} gateways: {len(bad)} bad")
    for b in bad[:10]:
        print("  " + b)
    sys.exit(1 if bad else 0)

if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY

# ---------------------------------------------------------------- cluster

if ! "$PY" -c 'import boto3' 2>/dev/null; then
    fail cluster-up "$PY cannot import boto3 (run .ci/run's end-to-end install, or set GRIDSTORE_E2E_VENV)"
    summary
fi
if ! command -v curl >/dev/null; then
    fail cluster-up "curl not found"
    summary
fi
# Every port the grid will listen on must be free now.
busy_ports=$("$PY" - "$PORT_BASE" <<'PY'
import socket, sys
base = int(sys.argv[1])
for p in range(base + 1, base + 17):
    s = socket.socket()
    # As the servers do: a port held only by TIME_WAIT connections of an
    # earlier run is free to listen on.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        print(p, end=" ")
    finally:
        s.close()
PY
)
if [[ -n "$busy_ports" ]]; then
    fail cluster-up "127.0.0.1 ports in use: ${busy_ports% } (the grid needs $((PORT_BASE + 1))-$((PORT_BASE + 16)); set CLUSTER_E2E_PORT_BASE to move them)"
    summary
fi

say "binary $BIN; work dir $W"
# As README: the master key in the environment of the gateways and admin
# (nodes need no secret: they know callers by their identities).
export GRIDSTORE_MASTER_KEY
GRIDSTORE_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

up_err=""
echo "epoch = 1" >"$W/map.toml"
for i in 1 2 3 4 5 6; do
    site="farm-$(((i + 1) / 2))"
    mkdir -p "$W/n$i"
    cat >"$W/n$i/node.toml" <<EOF
node_id = "n$i"
site = "$site"
listen = "127.0.0.1:$(node_port "$i")"
data_dir = "$W/n$i/data"
shutdown_grace_secs = 5
gc_grace_secs = $GC_GRACE_SECS
gc_interval_secs = $GC_INTERVAL_SECS

[repair]
reconcile_interval_secs = $RECONCILE_SECS
heartbeat_secs = $HEARTBEAT_SECS
down_after_secs = $DOWN_AFTER_SECS
anti_entropy_interval_secs = 30

[jobs]
allowed = ["python3"]
EOF
    if ! key=$("$BIN" node --config "$W/n$i/node.toml" --identity 2>>"$W/logs/n$i.log"); then
        up_err="gridstore node --identity failed for n$i"
        break
    fi
    printf '\n[[nodes]]\nid = "n%s"\naddr = "127.0.0.1:%s"\nsite = "%s"\nkey = "%s"\n' \
        "$i" "$(node_port "$i")" "$site" "$key" >>"$W/map.toml"
done
for g in 1 2; do
    [[ -z "$up_err" ]] || break
    mkdir -p "$W/gw$g" # its identity/ is made beside the config
    cat >"$W/gw$g/gw.toml" <<EOF
cluster_map = "$W/map.toml"
listen = "127.0.0.1:$(gw_port "$g" 0)"
webdav_listen = "127.0.0.1:$(gw_port "$g" 1)"
jobs_listen = "127.0.0.1:$(gw_port "$g" 2)"
admin_listen = "127.0.0.1:0"
housekeeping_secs = $HOUSEKEEPING_SECS
orphan_grace_secs = $ORPHAN_GRACE_SECS
upload_max_age_secs = $UPLOAD_MAX_AGE_SECS
EOF
    if ! key=$("$BIN" gateway --config "$W/gw$g/gw.toml" --identity 2>>"$W/logs/gw$g.log"); then
        up_err="gridstore gateway --identity failed for gw$g"
        break
    fi
    printf '\n[[clients]]\nname = "gw%s"\nrole = "gateway"\nkey = "%s"\n' "$g" "$key" >>"$W/map.toml"
done
if [[ -z "$up_err" ]]; then
    for i in 1 2 3 4 5 6; do start_node "$i"; done
    for i in 1 2 3 4 5 6; do
        wait_line "n$i" "gridstore node n$i listening on" 60 || { up_err="node n$i did not start"; break; }
    done
fi
if [[ -z "$up_err" ]]; then
    for g in 1 2; do start_gateway "$g"; done
    for g in 1 2; do
        wait_line "gw$g" "gridstore gateway ready: S3 on" 60 || { up_err="gateway gw$g did not start"; break; }
    done
fi
if [[ -z "$up_err" ]]; then
    # The gateways hand the map to the nodes at start: /health says so.
    deadline=$((SECONDS + 30))
    for i in 1 2 3 4 5 6; do
        until [[ "$(curl -sk --max-time 3 "https://127.0.0.1:$(node_port "$i")/health")" == ok ]]; do
            ((SECONDS < deadline)) || { up_err="node n$i holds no cluster map 30 s after the gateways started"; break 2; }
            sleep 0.3
        done
    done
fi
if [[ -z "$up_err" ]]; then
    creds=$(admin key create --name cluster-e2e --admin 2>>"$W/logs/admin.log")
    AK=$(awk '/^access key:/ { print $3 }' <<<"$creds")
    SK=$(awk '/^secret key:/ { print $3 }' <<<"$creds")
    [[ -n "$AK" && -n "$SK" ]] || up_err="gridstore admin key create printed no key pair: $(tail -n 3 "$W/logs/admin.log")"
fi
EP1="http://127.0.0.1:$(gw_port 1 0)"
EP2="http://127.0.0.1:$(gw_port 2 0)"
BUCKET=cluster-e2e
if [[ -z "$up_err" ]] && ! "$PY" "$W/tool.py" make_bucket "$EP1" "$BUCKET" "$AK" "$SK" 2>>"$W/logs/tool.log"; then
    up_err="CreateBucket failed: $(tail -n 1 "$W/logs/tool.log")"
fi
if [[ -n "$up_err" ]]; then
    fail cluster-up "$up_err"
    for c in gateway-crash-leftovers node-kill-repair node-sigstop-p99 job-takeover readback no-panics; do
        fail "$c" "not run: the grid did not come up"
    done
    summary
fi
pass cluster-up "6 nodes on 3 sites, 2 gateways, map with 8 pinned identities, key $AK, bucket $BUCKET ($((SECONDS - T_START)) s)"

# The load: 4 workers, each a request then a pause of 0-0.3 s, half PUTs
# and half GETs, each to either gateway.
"$PY" "$W/tool.py" load "$EP1,$EP2" "$BUCKET" "$W/load" "$AK" "$SK" 4 0.15 >>"$W/logs/load.log" 2>&1 &
LOAD_PID=$!
deadline=$((SECONDS + 60))
while (($(acked_count) < 40)) && ((SECONDS < deadline)); do sleep 0.5; done
say "load running: $(acked_count) objects acknowledged"

# ------------------------------------------------- c. gateway crash leftovers
#
# What a crashed gateway leaves: chunk references (and their shards) of a
# PUT whose object record was never written, and a multipart upload never
# completed (its parts' references and shards). The observable for the
# shards is the per-node shard count of `gridstore admin status`: with the
# load paused nothing else adds or removes shards, so the sum before the
# crashed writes start is exactly what the acknowledged objects need. The
# crashed writes raise it; once housekeeping has aborted the upload
# (upload_max_age_secs) and removed the dead references (orphan_grace_secs),
# the nodes delete the unreferenced shards (gc_grace_secs) and the sum is
# back where it was. Below it would mean acknowledged data was deleted.
# The upload must also vanish from ListMultipartUploads (both gateways).
case_gateway_crash() {
    local name=gateway-crash-leftovers base="" prev="" s i t_kill t_restart deadline bound
    if ! load_pause; then
        fail $name "the load did not go idle within 90 s"
        return
    fi
    # Baseline: the same sum twice, 3 s apart.
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        s=$(shard_total)
        [[ -n "$s" && "$s" == "$prev" ]] && { base=$s; break; }
        prev=$s
        sleep 3
    done
    if [[ -z "$base" ]]; then
        fail $name "no stable shard count with the load paused (last: ${s:-a node not up})"
        load_resume
        return
    fi
    local gc0
    gc0=$(metric_sum gridstore_node_gc_deleted_shards_total)
    say "c: $base shards for $(acked_count) acknowledged objects; starting a 200 MiB PUT and a multipart upload through gw1"
    mkdir -p "$W/crash"
    "$PY" "$W/tool.py" crash "$EP1" "$BUCKET" "$AK" "$SK" "$W/crash" >>"$W/logs/crash.log" 2>&1 &
    CRASH_PID=$!
    # Kill once parts 1-2 are in, part 3 is 4 MiB on its way and the big
    # PUT 16 MiB (so the upload is still far from upload_max_age_secs when
    # gw1 is back), and see that the nodes hold shards of them.
    local big=0 p3=0 during=""
    deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        big=$(cat "$W/crash/big.bytes" 2>/dev/null || echo 0)
        p3=$(cat "$W/crash/part3.bytes" 2>/dev/null || echo 0)
        if [[ -e "$W/crash/parts_done" ]] && ((big >= 16 << 20 && p3 >= 4 << 20)); then
            during=$(shard_total)
            break
        fi
        kill -0 "$CRASH_PID" 2>/dev/null || break
        sleep 0.2
    done
    if [[ -z "$during" ]]; then
        fail $name "the crashed writes did not get going (big PUT $((big >> 20)) MiB, part 3 $((p3 >> 20)) MiB sent; $(tail -n 2 "$W/logs/crash.log" | tr '\n' ' '))"
        kill -KILL "$CRASH_PID" 2>/dev/null; wait "$CRASH_PID" 2>/dev/null; CRASH_PID=""
        load_resume
        return
    fi
    kill9 gw1
    t_kill=$SECONDS
    say "c: kill -9 gw1 with the big PUT at $((big >> 20)) MiB and part 3 at $((p3 >> 20)) MiB sent; $during shards held"
    for _ in $(seq 50); do kill -0 "$CRASH_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$CRASH_PID" 2>/dev/null
    wait "$CRASH_PID" 2>/dev/null
    CRASH_PID=""
    say "c: client side: $(tr '\n' ';' <"$W/logs/crash.log")"
    if grep -q "completed with" "$W/logs/crash.log"; then
        fail $name "a write the crash should have interrupted completed: $(grep completed "$W/logs/crash.log" | tr '\n' ' ')"
        start_gateway 1; wait_line gw1 "gridstore gateway ready: S3 on" 60
        load_resume
        return
    fi
    start_gateway 1
    if ! wait_line gw1 "gridstore gateway ready: S3 on" 60; then
        fail $name "gw1 did not come back"
        load_resume
        return
    fi
    t_restart=$SECONDS
    local uid listed=""
    uid=$(cat "$W/crash/upload_id")
    for ep in "$EP1" "$EP2"; do
        "$PY" "$W/tool.py" uploads "$ep" "$BUCKET" "$AK" "$SK" 2>>"$W/logs/tool.log" | grep -qxF "$uid" && listed+="+"
    done
    if [[ "$listed" != "++" ]]; then
        fail $name "the interrupted upload is not listed by both gateways after the restart, $((SECONDS - t_kill)) s after the crash (younger than upload_max_age_secs=$UPLOAD_MAX_AGE_SECS): nothing to watch"
        load_resume
        return
    fi
    # Bound: the upload ages out, the lease of a dead holder lapses (three
    # rounds), a round aborts it, the next removes its references (older
    # than orphan_grace by then), the nodes' gc marks and, a grace later,
    # deletes the shards; plus one of each interval and 20 s of slack.
    bound=$((UPLOAD_MAX_AGE_SECS + ORPHAN_GRACE_SECS + 5 * HOUSEKEEPING_SECS + GC_GRACE_SECS + 2 * GC_INTERVAL_SECS + 20))
    deadline=$((t_kill + bound))
    local gone_at="" swept_at="" low=""
    while ((SECONDS < deadline)); do
        if [[ -z "$gone_at" ]]; then
            listed=""
            for ep in "$EP1" "$EP2"; do
                "$PY" "$W/tool.py" uploads "$ep" "$BUCKET" "$AK" "$SK" 2>>"$W/logs/tool.log" | grep -qxF "$uid" && listed+="+"
            done
            [[ -z "$listed" ]] && gone_at=$((SECONDS - t_kill))
        fi
        s=$(shard_total)
        if [[ -n "$s" ]]; then
            ((s < base)) && low="$s"
            if ((s == base)) && [[ -z "$swept_at" ]]; then swept_at=$((SECONDS - t_kill)); fi
            ((s != base)) && swept_at=""
        fi
        [[ -n "$gone_at" && -n "$swept_at" ]] && break
        sleep 2
    done
    local gc1
    gc1=$(metric_sum gridstore_node_gc_deleted_shards_total)
    local detail="baseline $base shards, $during at the crash (+$((during - base))); upload gone from ListMultipartUploads ${gone_at:-NOT}${gone_at:+ s} after the crash; shard count back to $base ${swept_at:-NOT}${swept_at:+ s} after the crash (now ${s:-?}; gc deleted $((gc1 - gc0)) shards); bound $bound s"
    if [[ -n "$low" ]]; then
        fail $name "$detail; the count fell to $low, BELOW the baseline: acknowledged data deleted?"
    elif [[ -n "$gone_at" && -n "$swept_at" ]]; then
        pass $name "$detail"
    else
        fail $name "$detail"
    fi
    load_resume
}

# ------------------------------------------------- a. node kill -9, restart
case_node_kill() {
    local name=node-kill-repair v=n2 t_kill t_restart down_at="" st deadline r prev_rebuilt="" ok=0 full_at=""
    local t0 t1
    t0=$(now)
    kill9 $v
    t_kill=$SECONDS
    say "a: kill -9 $v (farm-1) under the load"
    # Wait until the other nodes mark it down (reads and writes then go
    # around it; its shards wait for it, as it comes back long before
    # lost_after_secs), or at most down_after_secs + 20 s.
    deadline=$((SECONDS + DOWN_AFTER_SECS + 20))
    while ((SECONDS < deadline)); do
        st=$(node_state $v)
        [[ "$st" == down ]] && { down_at=$((SECONDS - t_kill)); break; }
        sleep 1
    done
    sleep 3
    start_node 2
    if ! wait_line $v "gridstore node $v listening on" 60; then
        fail $name "$v did not restart"
        return
    fi
    t_restart=$SECONDS
    local since
    since=$(($(date +%s) + RECONCILE_SECS))
    say "a: $v restarted $((t_restart - t_kill)) s after the kill (marked down after ${down_at:-never} s); polling admin repair status"
    # Full redundancy: every node up, and on every node a reconciliation
    # pass ended at least one reconcile interval after the restart with
    # nothing missing, nothing rebuilding, no damaged chunk; twice in a
    # row with no rebuild in between.
    deadline=$((t_restart + REPAIR_BOUND_SECS))
    while ((SECONDS < deadline)); do
        r=$(repair_summary)
        if [[ -n "$r" ]]; then
            read -r down missing rebuilding damaged rebuilt handed oldest <<<"$r"
            if ((down == 0 && missing == 0 && rebuilding == 0 && damaged == 0 && oldest >= since)); then
                if [[ "$prev_rebuilt" == "$rebuilt" ]]; then
                    ok=1
                    full_at=$((SECONDS - t_restart))
                    break
                fi
                prev_rebuilt=$rebuilt
            else
                prev_rebuilt=""
            fi
        fi
        sleep 2
    done
    t1=$(now)
    local loadfig
    loadfig=$(load_window "$t0" "$t1")
    if ((ok)); then
        pass $name "marked down ${down_at:-NOT} s after the kill, restarted at $((t_restart - t_kill)) s; full redundancy ${full_at} s after the restart (all nodes: $rebuilt shards rebuilt, $handed handed back since start); load meanwhile: $loadfig"
    else
        fail $name "no full redundancy within $REPAIR_BOUND_SECS s of the restart (last: ${r:-no answer} = down missing rebuilding damaged rebuilt handed_back oldest_pass; wanted oldest_pass >= $since); load meanwhile: $loadfig"
        admin repair status 2>&1 | sed 's/^/    /'
    fi
}

# ------------------------------------------------- b. SIGSTOP a node 30 s
case_node_sigstop() {
    local name=node-sigstop-p99 v=n4 t0 t1 deadline oldest figs p99 getp putp
    t0=$(now)
    kill -STOP "${PID[$v]}"
    say "b: SIGSTOP $v (farm-2) for $STOP_SECS s under the load"
    sleep "$STOP_SECS"
    t1=$(now)
    kill -CONT "${PID[$v]}"
    say "b: SIGCONT $v; waiting for the requests started meanwhile to end"
    # Every request that started before SIGCONT must have ended (the
    # load's oldest request in flight is younger), at most 70 s.
    deadline=$((SECONDS + 70))
    while ((SECONDS < deadline)); do
        oldest=$(cat "$W/load/oldest" 2>/dev/null)
        [[ "$oldest" == none ]] && break
        [[ -n "$oldest" ]] && awk -v a="$oldest" -v b="$t1" 'BEGIN { exit !(a >= b) }' && break
        sleep 0.2
    done
    figs=$(load_window "$t0" "$t1")
    p99=$("$PY" "$W/tool.py" p99s "$W/load" "$t0" "$t1")
    read -r getp putp <<<"$p99"
    if [[ "$getp" != - && "$putp" != - ]] && awk -v g="$getp" -v p="$putp" 'BEGIN { exit !(g < 2 && p < 2) }'; then
        pass $name "requests started during the stop: $figs"
    else
        fail $name "requests started during the stop (p99 must be under 2 s): $figs"
    fi
}

# ------------------------------------------------- e. job takeover
#
# A job lives in the grid's records, not in its gateway: kill -9 the
# gateway driving it and the other takes it over once the lease lapses
# (6 s), from the recorded task states.
case_job_takeover() {
    local name=job-takeover id st1 st2 done_at_kill
    local jobdir="$W/job"
    mkdir -p "$jobdir"
    jobcli() { # G ARGS...: `gridstore job` through gateway G
        local g=$1
        shift
        timeout 600 "$BIN" job --endpoint "http://127.0.0.1:$(gw_port "$g" 2)" \
            --access-key "$AK" --secret-key "$SK" "$@"
    }
    if ! "$PY" - "$EP2" "$AK" "$SK" "$jobdir" >>"$W/logs/job.log" 2>&1 <<'PY'; then
import boto3, collections, random, sys
ep, ak, sk, out = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
for b in ("jobs-in", "jobs-out"):
    s3.create_bucket(Bucket=b)
s3.put_bucket_versioning(Bucket="jobs-out", VersioningConfiguration={"Status": "Enabled"})
words = "grid shard farm site chunk parity node repair scrub object".split()
total = collections.Counter()
for i in range(500):
    r = random.Random(i)
    text = [r.choice(words) for _ in range(r.randint(200, 600))]
    total.update(text)
    s3.put_object(Bucket="jobs-in", Key=f"text/{i:04d}.txt", Body=(" ".join(text) + "\n").encode())
s3.put_object(Bucket="jobs-in", Key="code/wc.py", Body=b"""import sys, time, collections
time.sleep(0.1)
c = collections.Counter(sys.stdin.read().split())
for w in sorted(c):
    print(f"{w}\\t{c[w]}")
""")
s3.put_object(Bucket="jobs-in", Key="code/sum.py", Body=b"""import sys, collections
c = collections.Counter()
for line in sys.stdin:
    w, n = line.rstrip("\\n").split("\\t")
    c[w] += int(n)
for w in sorted(c):
    print(f"{w}\\t{c[w]}")
""")
with open(f"{out}/expected", "w") as f:
    for w in sorted(total):
        f.write(f"{w}\t{total[w]}\n")
PY
        fail "$name" "could not upload the corpus: $(tail -n 2 "$W/logs/job.log")"
        return
    fi
    if ! id=$(jobcli 1 submit --bucket jobs-in --prefix text/ --out jobs-out/wc \
        --file jobs-in/code/wc.py --reduce "python3 sum.py" --reduce-file jobs-in/code/sum.py \
        --per-node 1 -- python3 wc.py 2>>"$W/logs/job.log"); then
        fail "$name" "submit through gw1 failed: $(tail -n 2 "$W/logs/job.log")"
        return
    fi
    done_of() { jobcli "$1" status "$id" --json 2>>"$W/logs/job.log" | "$PY" -c 'import json,sys; v=json.load(sys.stdin); print(v["phase"], v["tasks"]["done"])'; }
    local deadline=$((SECONDS + 120))
    until [[ "$(done_of 2 | awk '{print $2}')" -ge 50 ]] 2>/dev/null; do
        ((SECONDS < deadline)) || { fail "$name" "50 tasks not done within 120 s: $(done_of 2)"; return; }
        sleep 0.3
    done
    kill -KILL "${PID[gw1]}"
    wait "${PID[gw1]}" 2>/dev/null
    done_at_kill=$(done_of 2)
    say "e: gw1 killed with the job at: $done_at_kill"
    if ! jobcli 2 status "$id" --wait >"$jobdir/status2" 2>>"$W/logs/job.log"; then
        fail "$name" "job status --wait through gw2 failed: $(tail -n 2 "$W/logs/job.log")"
        return
    fi
    start_gateway 1
    if ! wait_line gw1 "gridstore gateway ready: S3 on" 60; then
        fail "$name" "gw1 did not restart"
        return
    fi
    st1=$(done_of 1)
    st2=$(done_of 2)
    local check
    check=$("$PY" - "$EP1" "$AK" "$SK" "$jobdir/expected" 2>&1 <<'PY'
import boto3, collections, sys
ep, ak, sk, expected = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
got = s3.get_object(Bucket="jobs-out", Key="wc/_reduce")["Body"].read().decode()
assert got == open(expected).read(), "reduce output differs from the direct count"
keys = collections.Counter()
for page in s3.get_paginator("list_object_versions").paginate(Bucket="jobs-out", Prefix="wc/"):
    for v in page.get("Versions", []):
        keys[v["Key"]] += 1
twice = {k: n for k, n in keys.items() if n > 1}
assert not twice, f"outputs written more than once: {twice}"
assert len(keys) == 502, f"{len(keys)} outputs; 500 maps, the reduce and the summary expected"
print(f"reduce exact, {len(keys)} outputs each written once")
PY
)
    local rc=$?
    if ((rc != 0)); then
        fail "$name" "$(tail -n 1 <<<"$check")"
    elif [[ "$st1" != "done 500" || "$st1" != "$st2" ]]; then
        fail "$name" "status through gw1 '$st1', through gw2 '$st2' (want 'done 500' from both)"
    else
        pass "$name" "gw1 killed at '$done_at_kill' tasks done; gw2 finished the job; $check; status 'done 500' from both gateways"
    fi
}

case_gateway_crash
case_node_kill
case_node_sigstop
case_job_takeover

# ------------------------------------------------- d. read back, panics
touch "$W/load/stop"
for _ in $(seq 300); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$LOAD_PID" 2>/dev/null; then
    say "d: the load did not stop within 60 s; killing it"
    kill -KILL "$LOAD_PID" 2>/dev/null
fi
wait "$LOAD_PID" 2>/dev/null
LOAD_PID=""
say "d: $(tail -n 1 "$W/logs/load.log"); $(wc -l <"$W/load/requests.tsv") requests, $(awk -F'\t' '$4 != 1' "$W/load/requests.tsv" | wc -l) failed"
rb=$("$PY" "$W/tool.py" verify "$W/load/acked.tsv" "$BUCKET" "$AK" "$SK" "$EP1" "$EP2" 2>&1)
rb_rc=$?
nbad=$(wc -l <"$W/load/bad.tsv" 2>/dev/null || echo 0)
if ((rb_rc == 0 && nbad == 0)); then
    pass readback "$(head -n 1 <<<"$rb"); load GETs with wrong data or a lost object: 0"
else
    fail readback "$(head -n 1 <<<"$rb"); load GETs with wrong data or a lost object: $nbad"
    tail -n +2 <<<"$rb"
    head -n 5 "$W/load/bad.tsv" 2>/dev/null | sed 's/^/  load: /'
fi

panics=$(grep -l 'panicked at' "$W"/logs/n?.log "$W"/logs/gw?.log 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')
dead=""
for p in n1 n2 n3 n4 n5 n6 gw1 gw2; do
    kill -0 "${PID[$p]}" 2>/dev/null || dead+="$p "
done
if [[ -z "$panics" && -z "$dead" ]]; then
    pass no-panics "no 'panicked at' in the 8 process logs; all 8 processes running"
else
    fail no-panics "panics in: ${panics:-none}; not running: ${dead:-none}"
    [[ -n "$panics" ]] && grep -h -m2 -A2 'panicked at' "$W"/logs/n?.log "$W"/logs/gw?.log | head -n 20
fi

summary

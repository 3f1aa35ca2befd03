#!/usr/bin/env bash
# The admin listener's status page in a real browser: starts `gridstore
# server`, drains one node, loads the page in headless Chromium (after its
# script has fetched status.json and drawn it) and checks that every node
# appears with its state from the cluster map, the drained one as
# draining. Saves a screenshot to $STATUS_PAGE_SCREENSHOT when it is set.
# Needs chromium and python3.
# Usage: bash tests/e2e/status_page.sh [path/to/gridstore]
set -euo pipefail
BIN="${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/debug/gridstore}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gridstore-status-page.XXXXXX")"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "status_page: FAIL: $*" >&2; exit 1; }
[ -n "$CHROMIUM" ] || fail "no chromium (apt-get install chromium)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN" server "$WORK/data" --listen "127.0.0.1:$(port)" --webdav-listen "127.0.0.1:$(port)" \
    --jobs-listen "127.0.0.1:$(port)" --admin-listen "127.0.0.1:$(port)" --job-allow "" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
PID=$!
for _ in $(seq 150); do grep -q "^data: " "$WORK/server.out" 2>/dev/null && break; sleep 0.2; done
ADMIN=$(sed -nE 's#^admin on (http://[^/ ]+)/.*#\1#p' "$WORK/server.out")
[ -n "$ADMIN" ] || { cat "$WORK/server.err" >&2; fail "server did not start"; }

# A state other than up: the gateway follows the map the nodes hold.
"$BIN" admin --dir "$WORK/data" node drain node-5 >/dev/null
for _ in $(seq 100); do
    curl -fsS "$ADMIN/status.json" | python3 -c '
import json, sys
nodes = [n for s in json.load(sys.stdin)["sites"] for n in s["nodes"]]
sys.exit(0 if any(n["id"] == "node-5" and n["state"] == "draining" for n in nodes) else 1)
' && break
    sleep 0.2
done

browse() {
    # --no-sandbox: CI runs as root, where Chromium's sandbox will not start.
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --user-data-dir="$WORK/profile" --virtual-time-budget=5000 --window-size=1400,1100 "$@" \
        2>>"$WORK/chromium.err"
}
browse --dump-dom "$ADMIN/" >"$WORK/dom.html" || { cat "$WORK/chromium.err" >&2; fail "chromium failed"; }

python3 - "$WORK/dom.html" <<'PY' || fail "the page does not show the grid"
import re, sys
dom = open(sys.argv[1]).read()
states = dict(re.findall(r'data-node="([^"]+)" data-state="([^"]+)"', dom))
want = {f"node-{i}": "up" for i in range(5)} | {"node-5": "draining"}
if states != want:
    sys.exit(f"node states on the page: {states}, expected {want}")
if 'class="badge ok"' not in dom:
    sys.exit("the gateway is not shown healthy")
if len(re.findall(r'class="site"', dom)) != 3:
    sys.exit("not three sites on the page")
print(f"status_page: {len(states)} nodes drawn with their states")
PY

if [ -n "${STATUS_PAGE_SCREENSHOT:-}" ]; then
    browse --screenshot="$STATUS_PAGE_SCREENSHOT" "$ADMIN/" >/dev/null ||
        fail "no screenshot"
    [ -s "$STATUS_PAGE_SCREENSHOT" ] || fail "empty screenshot"
    echo "status_page: screenshot in $STATUS_PAGE_SCREENSHOT"
fi
echo "status_page: ok"

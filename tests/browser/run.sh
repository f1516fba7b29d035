#!/usr/bin/env bash
# Browser test of `sa2va serve`: starts the server on a free port and drives its page in headless Chromium.
# usage: tests/browser/run.sh SERVER_BINARY [MODEL_DIR IMAGE_PNG]
# Without MODEL_DIR and IMAGE_PNG it uses the tiny fixture model ($SA2VA_FIXTURES, default
# ../shared/fixtures beside the repository); without the fixtures it skips (exit 77), except
# under CI=true where that is a failure.
# env: CHROMIUM (default /usr/bin/chromium), BROWSER_TEST_OUT (folder for screenshots, the export and the server log)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [[ $# -eq 1 ]]; then
  fixture=${SA2VA_FIXTURES:-$here/../../../shared/fixtures}/sa2va-tiny
  if [[ ! -d "$fixture" ]]; then
    echo "browser test: fixture $fixture not found (set SA2VA_FIXTURES)" >&2
    [[ "${CI:-}" == "true" ]] && exit 1
    exit 77
  fi
  set -- "$1" "$fixture" "$fixture/inputs/image.png"
fi
if [[ $# -ne 3 ]]; then
  echo "usage: $0 SERVER_BINARY [MODEL_DIR IMAGE_PNG]" >&2
  exit 2
fi
server_binary=$(realpath "$1")
model_dir=$2
image=$(realpath "$3")
chromium=${CHROMIUM:-/usr/bin/chromium}

[[ -x "$server_binary" ]] || { echo "browser test: no server binary at $1" >&2; exit 2; }
[[ -f "$image" ]] || { echo "browser test: no image at $3" >&2; exit 2; }
[[ -x "$chromium" ]] || { echo "browser test: no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2; exit 2; }

if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

port=$(node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
url="http://127.0.0.1:$port"

if [[ -n "${BROWSER_TEST_OUT:-}" ]]; then
  mkdir -p "$BROWSER_TEST_OUT"
  server_log="$BROWSER_TEST_OUT/server.log"
else
  server_log=$(mktemp)
fi

"$server_binary" serve --model "$model_dir" --port "$port" >"$server_log" 2>&1 &
server_pid=$!
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  # SIGTERM first; a server that does not stop within 10 s is killed.
  if kill "$server_pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  [[ -n "${BROWSER_TEST_OUT:-}" ]] || rm -f "$server_log"
}
trap cleanup EXIT

# The server loads the model before it listens: wait for /health (120 s at most).
health() {
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));' "$url/health"
}
deadline=$((SECONDS + 120))
until health; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "browser test: the server exited before answering /health; its output:" >&2
    tail -n 40 "$server_log" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "browser test: $url/health did not answer 200 within 120 s; server output:" >&2
    tail -n 40 "$server_log" >&2
    exit 1
  fi
  sleep 0.5
done

status=0
node "$here/browser_test.mjs" "$url/" "$image" "$chromium" || status=$?
if ((status != 0)); then
  echo "browser test: server output (last lines):" >&2
  tail -n 20 "$server_log" >&2
fi
exit "$status"

#!/usr/bin/env bash
# Compare imaas with plain FastAPI, LitServe and BentoML serving the same ONNX model with the
# same pre-processing, one server at a time (idle LitServe workers poll and would steal CPU),
# each driven by the same load generator (`imaas bench`). Each peer is installed into its own
# venv here (benchmarks/peers/.venv-NAME), never into the project's.
#
#   bash benchmarks/peers/compare.sh            # from the repository root, after make test
#   DURATION=10 REPEAT=3 CONCURRENCY=32 bash benchmarks/peers/compare.sh
set -euo pipefail
cd "$(dirname "$0")"
PEERS_DIR=$(pwd)
ROOT=$(cd ../.. && pwd)
IMAAS="$ROOT/.venv/bin/imaas"
PY="$ROOT/.venv/bin/python"
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
CONCURRENCY=${CONCURRENCY:-32}
WARMUP=${WARMUP:-2}
OUT=${OUT:-$(mktemp -d)}
export BENTOML_DO_NOT_TRACK=true

for name in fastapi litserve bentoml; do
  if [ ! -x ".venv-$name/bin/python" ]; then
    python3 -m venv ".venv-$name"
    ".venv-$name/bin/python" -m pip install -q -r "requirements-$name.txt"
  fi
done

HOME_DIR=$(mktemp -d)
export IMAAS_HOME="$HOME_DIR"
"$IMAAS" zoo install mobilenet-v2 > /dev/null
export PEER_MODEL=$("$PY" -c "
from imaas.domain import ModelRef
from imaas.settings import Settings
from imaas.services.container import build_services
s = build_services(Settings())
print(s.artifacts.open_path(s.registry.resolve(ModelRef('mobilenet-v2')).sha256))")

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill -- "-$p" 2>/dev/null || true; done; rm -rf "$HOME_DIR"; }
trap cleanup EXIT

wait_http() {  # URL to poll until it answers (any status)
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "no answer from $1" >&2; return 1
}

stop_last() { kill -- "-${pids[-1]}" 2>/dev/null || true; sleep 2; unset 'pids[-1]'; }

BENCH=(--concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" --repeat "$REPEAT" --json)

# imaas alone (served and raw in one run)
setsid "$IMAAS" serve --port 9000 --no-grpc --log-level warning & pids+=($!)
wait_http http://127.0.0.1:9000/readyz
"$IMAAS" bench --url http://127.0.0.1:9000 "${BENCH[@]}" > "$OUT/imaas.json"
stop_last

# each peer alone
PEER_PORT=9001 setsid ".venv-fastapi/bin/uvicorn" fastapi_app:app --app-dir "$PEERS_DIR" --port 9001 --workers 2 \
  --loop uvloop --http httptools --no-access-log --log-level warning & pids+=($!)
wait_http http://127.0.0.1:9001/docs
"$IMAAS" bench --protocol none --no-raw --peer "fastapi=raw+http://127.0.0.1:9001/predict" "${BENCH[@]}" > "$OUT/fastapi.json"
stop_last

PEER_PORT=9002 setsid ".venv-litserve/bin/python" litserve_app.py & pids+=($!)
wait_http http://127.0.0.1:9002/health
"$IMAAS" bench --protocol none --no-raw --peer "litserve=json-b64:image+http://127.0.0.1:9002/predict" "${BENCH[@]}" \
  > "$OUT/litserve.json"
stop_last

setsid ".venv-bentoml/bin/bentoml" serve bentoml_service:Classifier --port 9003 --host 127.0.0.1 & pids+=($!)
wait_http http://127.0.0.1:9003/readyz
"$IMAAS" bench --protocol none --no-raw --peer "bentoml=multipart:images+http://127.0.0.1:9003/predict" "${BENCH[@]}" \
  > "$OUT/bentoml.json"
stop_last

"$PY" "$PEERS_DIR/report.py" "$OUT"

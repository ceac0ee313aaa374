#!/usr/bin/env bash
# Compare imaas with plain FastAPI, LitServe and BentoML serving the same ONNX model with the
# same pre-processing, one server at a time (idle LitServe workers poll and would steal CPU),
# each driven by the same load generator, in one `imaas bench` run. Each peer is installed into its own
# venv here (benchmarks/peers/.venv-NAME), never into the project's.
#
#   bash benchmarks/peers/compare.sh            # from the repository root, after make test
#   DURATION=10 REPEAT=3 CONCURRENCY=32 JSON=1 bash benchmarks/peers/compare.sh
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

cleanup() { [ -n "${IMAAS_PID:-}" ] && kill -- "-$IMAAS_PID" 2>/dev/null; rm -rf "$HOME_DIR"; }
trap cleanup EXIT

setsid "$IMAAS" serve --port 9000 --no-grpc --log-level warning & IMAAS_PID=$!
for _ in $(seq 1 300); do curl -sf -o /dev/null http://127.0.0.1:9000/readyz && break; sleep 0.2; done

# One imaas bench run: imaas served, each peer (started just before its turn and stopped
# after it, so idle peers take no CPU), then the raw pipeline; it prints every ratio.
"$IMAAS" bench --url http://127.0.0.1:9000 --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
  --repeat "$REPEAT" ${JSON:+--json} \
  --peer "fastapi=raw+http://127.0.0.1:9001/predict" \
  --peer-cmd "fastapi=cd $PEERS_DIR && exec .venv-fastapi/bin/uvicorn fastapi_app:app --port 9001 --workers 2 \
--loop uvloop --http httptools --no-access-log --log-level warning" \
  --peer "litserve=json-b64:image+http://127.0.0.1:9002/predict" \
  --peer-cmd "litserve=cd $PEERS_DIR && PEER_PORT=9002 exec .venv-litserve/bin/python litserve_app.py" \
  --peer "bentoml=multipart:images+http://127.0.0.1:9003/predict" \
  --peer-cmd "bentoml=cd $PEERS_DIR && exec .venv-bentoml/bin/bentoml serve bentoml_service:Classifier --port 9003 \
--host 127.0.0.1"

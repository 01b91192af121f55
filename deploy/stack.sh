#!/usr/bin/env bash
# The production layout, locally (`make stack`): an MLflow tracking server with PostgreSQL
# as backend store and proxied artifact storage, two serving replicas that follow its
# registry, and nginx balancing over them on STACK_PORT (8000), the only public address: the
# replicas' gunicorns listen on unix sockets in a private directory (docs/front.md). In
# production the artifact destination is S3 (s3://bucket/path), each replica runs on its own
# machine (on a private network address instead of a socket); nothing else changes.
set -euo pipefail
cd "$(dirname "$0")/.."

DB_URL=${STACK_DB_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/mlflow}
ARTIFACTS=${STACK_ARTIFACTS:-$PWD/mlartifacts}
MLFLOW_PORT=${STACK_MLFLOW_PORT:-5000}
PORT=${STACK_PORT:-8000}
REPLICAS=${STACK_REPLICAS:-2}
TRAIN_ARGS=${STACK_TRAIN_ARGS:--P epochs=2}
PY=${PYTHON:-$PWD/.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/digits-stack-XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" -m deploy.create_database "$DB_URL"

"$PY" -m mlflow server --backend-store-uri "$DB_URL" --artifacts-destination "$ARTIFACTS" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 &
pids+=($!)
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
for _ in $(seq 1 120); do
  curl -fsS "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "$MLFLOW_TRACKING_URI/health" >/dev/null
echo "stack: tracking server and registry on $MLFLOW_TRACKING_URI (backend $DB_URL)"

if ! "$PY" -m training.registry_status; then
  # shellcheck disable=SC2086
  "$PY" -m mlflow run . --env-manager local --experiment-name digits -e train $TRAIN_ARGS
  "$PY" -m mlflow run . --env-manager local --experiment-name digits -e promote
fi

upstreams=()
for i in $(seq 1 "$REPLICAS"); do
  socket="$RUN_DIR/replica-$i.sock"
  FRONT=none UNIX_SOCKET="$socket" "$PY" -m serving &
  pids+=($!)
  upstreams+=(--upstream "unix:$socket")
done
# One nginx in front of all replicas: it buffers whole requests (slow clients cost the
# replicas nothing), spreads them round robin, and skips a replica that refuses connections
# or answers 502/503 for a few seconds (passive health checks).
"$PY" -m serving.front --host 127.0.0.1 --port "$PORT" "${upstreams[@]}" &
pids+=($!)
echo "stack: $REPLICAS replicas behind http://127.0.0.1:$PORT"
wait -n

#!/usr/bin/env bash
# The production layout, locally (`make stack`): an MLflow tracking server with PostgreSQL
# as backend store and proxied artifact storage, and two serving replicas that follow its
# registry. In production the artifact destination is S3 (s3://bucket/path) and each
# process runs on its own machine; nothing else changes.
set -euo pipefail
cd "$(dirname "$0")/.."

DB_URL=${STACK_DB_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/mlflow}
ARTIFACTS=${STACK_ARTIFACTS:-$PWD/mlartifacts}
MLFLOW_PORT=${STACK_MLFLOW_PORT:-5000}
PORTS=${STACK_PORTS:-8001 8002}
TRAIN_ARGS=${STACK_TRAIN_ARGS:--P epochs=2}
PY=${PYTHON:-$PWD/.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
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

for port in $PORTS; do
  PORT=$port "$PY" -m serving &
  pids+=($!)
  echo "stack: replica on http://127.0.0.1:$port"
done
wait -n

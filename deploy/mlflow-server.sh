#!/usr/bin/env bash
# The MLflow tracking server CASS logs to and looks models up in over HTTP
# (MLFLOW_TRACKING_URI=http://HOST:5000): PostgreSQL as backend store, artifacts served by the
# server from ARTIFACTS_DIR (a local folder or an object store URI).
set -euo pipefail
: "${CASS_PG_HOST:?}" "${CASS_PG_PORT:?}" "${CASS_PG_USER:?}" "${CASS_MLFLOW_DB:?}"
exec mlflow server \
  --backend-store-uri "postgresql+psycopg2://${CASS_PG_USER}:${CASS_PG_PASSWORD:-}@${CASS_PG_HOST}:${CASS_PG_PORT}/${CASS_MLFLOW_DB}" \
  --artifacts-destination "${ARTIFACTS_DIR:-/srv/mlflow/artifacts}" \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}"

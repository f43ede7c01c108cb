#!/bin/sh
# The MLflow tracking server behind MLflow's basic-auth app. Its config (admin password, the
# permissions database) is written at start from the compose secrets, in a private temp file.
# SECRETS, MLFLOW_DB_URI, MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS and MLFLOW_ARTIFACTS override the container's
# defaults (the tests run this script on loopback with SQLite). MLFLOW_ALLOWED_HOSTS: the Host headers
# MLflow answers (its DNS-rebinding guard; MLflow's default, localhost and private IPs, when unset):
# the compose file sets the name the other services reach it by.
set -eu
umask 077
secrets=${SECRETS:-/run/secrets}
db=${MLFLOW_DB_URI:-"postgresql+psycopg2://mlflow:$(cat "$secrets/mlflow_db_password")@postgres:5432/mlflow"}
config=$(mktemp -d)/basic_auth.ini
cat > "$config" <<INI
[mlflow]
default_permission = READ
database_uri = $db
admin_username = admin
admin_password = $(cat "$secrets/mlflow_admin_password")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
export MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$secrets/mlflow_flask_secret")"
# MLflow 3's job runner (six huey consumers, for GenAI trace jobs) serves nothing this pipeline
# uses; off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
set -- ${MLFLOW_ALLOWED_HOSTS:+--allowed-hosts "$MLFLOW_ALLOWED_HOSTS"}
exec mlflow server --app-name basic-auth --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
     --workers "${MLFLOW_WORKERS:-4}" "$@" \
     --backend-store-uri "$db" --artifacts-destination "${MLFLOW_ARTIFACTS:-/data/mlartifacts}"

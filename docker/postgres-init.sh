#!/bin/sh
# Run once by the postgres image on an empty data directory: Airflow's and MLflow's databases,
# each with its own user, passwords read from the compose secrets (never written in a file here).
set -eu
airflow_password=$(cat /run/secrets/airflow_db_password)
mlflow_password=$(cat /run/secrets/mlflow_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v airflow_password="$airflow_password" -v mlflow_password="$mlflow_password" <<'SQL'
CREATE USER airflow WITH PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE USER mlflow WITH PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL

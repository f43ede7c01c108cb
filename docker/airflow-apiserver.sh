#!/bin/sh
# Airflow's API server with its default (simple) auth manager: one admin user, whose password is
# the compose secret, handed to Airflow in a private file it may write (it locks and rewrites it).
set -eu
umask 077
passwords=$(mktemp -d)/passwords.json
python -c 'import json; print(json.dumps({"admin": open("/run/secrets/airflow_admin_password").read().strip()}))' \
    > "$passwords"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$passwords"
exec airflow api-server --port 8080

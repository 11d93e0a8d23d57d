#!/bin/bash
# Roles and databases of the platform; passwords come from the container's environment.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v analytics_pw="$ANALYTICS_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE rtap LOGIN PASSWORD :'analytics_pw';
CREATE DATABASE analytics OWNER rtap;
SQL

#!/bin/bash
# Roles and databases of the platform; passwords come from the container's environment,
# read by psql itself (\getenv, psql 15+): never on a command line, where any process of the
# container could read them.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<'SQL'
\getenv airflow_pw AIRFLOW_DB_PASSWORD
\getenv analytics_pw ANALYTICS_DB_PASSWORD
\getenv dashboard_pw DASHBOARD_DB_PASSWORD
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE rtap LOGIN PASSWORD :'analytics_pw';
CREATE DATABASE analytics OWNER rtap;
-- Only a database's owner (and roles granted it by name) may connect to it.
REVOKE CONNECT, TEMPORARY ON DATABASE airflow FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE analytics FROM PUBLIC;
-- The dashboard's role: reads what the pipeline's role creates, in any schema; never writes.
CREATE ROLE rtap_dashboard LOGIN PASSWORD :'dashboard_pw';
ALTER ROLE rtap_dashboard SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE analytics TO rtap_dashboard;
\connect analytics
ALTER DEFAULT PRIVILEGES FOR ROLE rtap GRANT USAGE ON SCHEMAS TO rtap_dashboard;
ALTER DEFAULT PRIVILEGES FOR ROLE rtap GRANT SELECT ON TABLES TO rtap_dashboard;
GRANT USAGE ON SCHEMA public TO rtap_dashboard;
SQL

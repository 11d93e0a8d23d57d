-- The warehouse's records: what compaction did per event day (include/warehouse/runs.py), and
-- the Iceberg JDBC catalog's tables (Iceberg's JdbcCatalog schema v0, which pyiceberg's
-- SqlCatalog shares). We create the catalog's tables ourselves, in the pipeline's schema:
-- JdbcCatalog looks for them in *any* schema of the database, would find another sandbox's and
-- not create its own.

CREATE TABLE IF NOT EXISTS compaction_runs (
    day           date PRIMARY KEY,
    status        text NOT NULL,            -- verified | failed | empty
    run_at        timestamptz NOT NULL DEFAULT now(),
    verified_at   timestamptz,
    rows          bigint,
    snapshot_id   bigint,
    report        jsonb NOT NULL,
    raw_expired_at timestamptz
);

CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name               varchar(255) NOT NULL,
    table_namespace            varchar(255) NOT NULL,
    table_name                 varchar(255) NOT NULL,
    metadata_location          varchar(1000),
    previous_metadata_location varchar(1000),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name   varchar(255) NOT NULL,
    namespace      varchar(255) NOT NULL,
    property_key   varchar(255),
    property_value varchar(1000),
    PRIMARY KEY (catalog_name, namespace, property_key)
);

-- Dated exchange rates, published with the product catalog (include/events/catalog.py,
-- store.publish_catalog): amounts are kept in their own currencies everywhere (the live
-- aggregates and the marts are keyed by currency) and readers convert them to a reporting
-- currency with the newest rate on or before an amount's day.

CREATE TABLE IF NOT EXISTS fx_rates (
    rate_date  date NOT NULL,
    currency   text NOT NULL,               -- one unit of this currency ...
    quote      text NOT NULL,               -- ... is worth `rate` units of this one
    rate       numeric(20, 10) NOT NULL CHECK (rate > 0),
    PRIMARY KEY (quote, currency, rate_date)
);

-- A producer run's revenue per currency (its `revenue` adds every currency: a checksum).
ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS revenue_by_currency jsonb NOT NULL DEFAULT '{}';

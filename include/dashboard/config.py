"""Settings of the analysts' dashboard, read from its environment (``RTAP_DASHBOARD_*``).

The dashboard is a reader: it is given read-only credentials (a Postgres role with SELECT only,
an S3 user with a read-only policy) and never the pipeline's own. A missing or unusable setting
stops it with a message naming the setting; passwords are never part of a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from include.endpoints import DEFAULT_REGION, PostgresEndpoint, S3Endpoint
from include.events.contract import Currency

PREFIX = "RTAP_DASHBOARD_"


class ConfigError(ValueError):
    """A dashboard setting is missing or unusable; the message names it."""


@dataclass(frozen=True)
class Config:
    pg: PostgresEndpoint  # the read-only role
    pg_schema: str = "public"
    # The Iceberg warehouse of the marts; empty: the History page says it is not configured.
    warehouse: str = ""
    marts_namespace: str = "marts"
    s3: S3Endpoint = field(default_factory=S3Endpoint)  # the read-only S3 user
    refresh_s: float = 5.0  # the live and health pages re-query this often
    window_min: int = 60  # default span of the live page
    freshness_slo_s: float = 60.0  # green while the last batch is younger (or nothing waits)
    airflow_url: str = ""  # links from the health page to the supervising DAGs
    # Amounts are kept per currency; the pages add them up in this one, converted with the
    # catalog's dated rates (fx_rates).
    reporting_currency: str = Currency.USD.value

    @property
    def where(self) -> str:
        """Where the live data comes from, for messages (no credentials)."""
        return f"{self.pg.where} (schema {self.pg_schema})"


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(PREFIX + name, "").strip()
    if not value:
        raise ConfigError(f"{PREFIX}{name} is not set (the dashboard's read-only connection)")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name}={raw} is out of range ({low:g}-{high:g})")
    return value


def from_env(env: Mapping[str, str]) -> Config:
    schema = env.get(PREFIX + "PG_SCHEMA", "").strip() or "public"
    if not schema.isidentifier():
        raise ConfigError(f"{PREFIX}PG_SCHEMA={schema!r} is not a plain identifier")
    namespace = env.get(PREFIX + "MARTS_NAMESPACE", "").strip() or "marts"
    if not namespace.isidentifier():
        raise ConfigError(f"{PREFIX}MARTS_NAMESPACE={namespace!r} is not a plain identifier")
    warehouse = env.get(PREFIX + "WAREHOUSE", "").strip().rstrip("/")
    if warehouse and not warehouse.startswith(("s3://", "s3a://", "file://", "/")):
        raise ConfigError(
            f"{PREFIX}WAREHOUSE={warehouse!r} is not a warehouse location (s3://bucket/prefix)"
        )
    reporting = env.get(PREFIX + "REPORTING_CURRENCY", "").strip().upper() or Currency.USD.value
    if reporting not in {c.value for c in Currency}:
        raise ConfigError(
            f"{PREFIX}REPORTING_CURRENCY={reporting!r} is not one of the contract's currencies "
            f"{sorted(c.value for c in Currency)}"
        )
    s3_endpoint = env.get(PREFIX + "S3_ENDPOINT", "").strip()
    s3_key = env.get(PREFIX + "S3_ACCESS_KEY", "").strip()
    s3_secret = env.get(PREFIX + "S3_SECRET_KEY", "").strip()
    if warehouse.startswith(("s3://", "s3a://")) and not (s3_key and s3_secret):
        raise ConfigError(
            f"{PREFIX}S3_ACCESS_KEY and {PREFIX}S3_SECRET_KEY are required to read "
            f"{PREFIX}WAREHOUSE={warehouse}"
        )
    return Config(
        pg=PostgresEndpoint(
            host=_required(env, "PG_HOST"),
            port=int(_number(env, "PG_PORT", 5432, 1, 65535)),
            dbname=_required(env, "PG_DB"),
            user=_required(env, "PG_USER"),
            password=_required(env, "PG_PASSWORD"),
        ),
        pg_schema=schema,
        warehouse=warehouse.replace("s3a://", "s3://", 1),
        marts_namespace=namespace,
        s3=S3Endpoint(
            endpoint_url=s3_endpoint,
            access_key=s3_key,
            secret_key=s3_secret,
            region=env.get(PREFIX + "S3_REGION", "").strip() or DEFAULT_REGION,
        ),
        refresh_s=_number(env, "REFRESH_S", 5.0, 1.0, 5.0),
        window_min=int(_number(env, "WINDOW_MIN", 60, 5, 24 * 60)),
        freshness_slo_s=_number(env, "FRESHNESS_SLO_S", 60.0, 5.0, 24 * 3600.0),
        airflow_url=env.get(PREFIX + "AIRFLOW_URL", "").strip().rstrip("/"),
        reporting_currency=reporting,
    )


def to_env(
    pg: PostgresEndpoint,
    s3: S3Endpoint,
    *,
    pg_schema: str = "public",
    warehouse: str = "",
    marts_namespace: str = "marts",
    airflow_url: str = "",
) -> dict[str, str]:
    """The settings :func:`from_env` reads, for a dashboard given these read-only endpoints."""
    return {
        PREFIX + "PG_HOST": pg.host,
        PREFIX + "PG_PORT": str(pg.port),
        PREFIX + "PG_DB": pg.dbname,
        PREFIX + "PG_USER": pg.user,
        PREFIX + "PG_PASSWORD": pg.password,
        PREFIX + "PG_SCHEMA": pg_schema,
        PREFIX + "WAREHOUSE": warehouse,
        PREFIX + "MARTS_NAMESPACE": marts_namespace,
        PREFIX + "S3_ENDPOINT": s3.endpoint_url,
        PREFIX + "S3_ACCESS_KEY": s3.access_key,
        PREFIX + "S3_SECRET_KEY": s3.secret_key,
        PREFIX + "S3_REGION": s3.region,
        PREFIX + "AIRFLOW_URL": airflow_url,
    }

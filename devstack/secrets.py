"""Credentials of the local stack: taken from the environment, or generated once.

No password is written in code or config. On first start each missing credential is generated
(random, URL-safe) and kept in ``<state>/secrets.env`` (mode 0600, ignored by git); a value set
in the environment always wins, so users and CI can inject their own.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from include.airflow_users import ADMIN_USER, OPERATOR_USER, VIEWER_USER

# name -> generator of a fresh value
_GENERATED = {
    "RTAP_S3_ACCESS_KEY": lambda: "rtap-" + secrets.token_hex(6),
    "RTAP_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    "RTAP_PG_SUPERUSER_PASSWORD": lambda: secrets.token_urlsafe(24),
    "RTAP_PG_PASSWORD": lambda: secrets.token_urlsafe(24),
    "RTAP_AIRFLOW_DB_PASSWORD": lambda: secrets.token_urlsafe(24),
    "RTAP_AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(12),
    "RTAP_AIRFLOW_OPERATOR_PASSWORD": lambda: secrets.token_urlsafe(12),
    "RTAP_AIRFLOW_VIEWER_PASSWORD": lambda: secrets.token_urlsafe(12),
    "RTAP_AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "RTAP_AIRFLOW_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "RTAP_AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    # The dashboard's read-only Postgres role and S3 user.
    "RTAP_DASHBOARD_DB_PASSWORD": lambda: secrets.token_urlsafe(24),
    "RTAP_DASHBOARD_S3_ACCESS_KEY": lambda: "dash-" + secrets.token_hex(6),
    "RTAP_DASHBOARD_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    # The pipeline's S3 users: the stream writes raw/dead letters/checkpoints, compaction the
    # warehouse (include/lake/s3.py writer_policy).
    "RTAP_STREAM_S3_ACCESS_KEY": lambda: "stream-" + secrets.token_hex(6),
    "RTAP_STREAM_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    "RTAP_WAREHOUSE_S3_ACCESS_KEY": lambda: "warehouse-" + secrets.token_hex(6),
    "RTAP_WAREHOUSE_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    # Their sandbox twins: the same policies under it/*/ (plus _reports/), where the tests
    # and the benchmarks keep their lakes (the real users' policies have no grant there).
    "RTAP_SANDBOX_STREAM_S3_ACCESS_KEY": lambda: "it-stream-" + secrets.token_hex(6),
    "RTAP_SANDBOX_STREAM_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    "RTAP_SANDBOX_WAREHOUSE_S3_ACCESS_KEY": lambda: "it-warehouse-" + secrets.token_hex(6),
    "RTAP_SANDBOX_WAREHOUSE_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
    "RTAP_SANDBOX_DASHBOARD_S3_ACCESS_KEY": lambda: "it-dash-" + secrets.token_hex(6),
    "RTAP_SANDBOX_DASHBOARD_S3_SECRET_KEY": lambda: secrets.token_urlsafe(30),
}

# The platform's one weak-credential rule (compose's credentials-check applies it too).
RULES_FILE = Path(__file__).resolve().parents[1] / "docker" / "credential-rules.env"


@dataclass(frozen=True)
class Rule:
    weak: frozenset[str]  # well-known defaults, refused in any case
    min_length: int  # for secrets; identifiers (user names, access key ids) have no minimum

    @classmethod
    def load(cls, path: Path = RULES_FILE) -> Rule:
        values = {k: v.strip('"') for k, v in _read_env_file(path).items()}
        return cls(frozenset(values["WEAK"].split()), int(values["MIN_LENGTH"]))

    def problem(self, name: str, value: str) -> str | None:
        """Why ``value`` is refused for credential ``name`` (the name, never the value), or
        None."""
        identifier = "ACCESS_KEY" in name or "ROOT_USER" in name
        if not value:
            return f"{name} is empty"
        if value.lower() in self.weak:
            return f"{name} is a well-known default"
        if not identifier and len(value) < self.min_length:
            return f"{name} is shorter than {self.min_length} characters"
        return None


class SecretError(ValueError):
    """A credential is unusable. The message names it (never its value)."""


@dataclass(frozen=True)
class Secrets:
    s3_access_key: str
    s3_secret_key: str
    pg_superuser_password: str
    pg_password: str
    airflow_db_password: str
    airflow_admin_password: str
    airflow_operator_password: str
    airflow_viewer_password: str
    airflow_fernet_key: str
    airflow_secret_key: str
    airflow_jwt_secret: str
    dashboard_db_password: str
    dashboard_s3_access_key: str
    dashboard_s3_secret_key: str
    stream_s3_access_key: str
    stream_s3_secret_key: str
    warehouse_s3_access_key: str
    warehouse_s3_secret_key: str
    sandbox_stream_s3_access_key: str
    sandbox_stream_s3_secret_key: str
    sandbox_warehouse_s3_access_key: str
    sandbox_warehouse_s3_secret_key: str
    sandbox_dashboard_s3_access_key: str
    sandbox_dashboard_s3_secret_key: str

    def __repr__(self) -> str:  # never print values
        return "Secrets(<redacted>)"

    def s3_keys(self, role: str, sandbox: bool = False) -> tuple[str, str]:
        """(access key, secret key) of an S3 role's user (include/lake/provision.py ROLES:
        stream, warehouse, dashboard), or of its sandbox twin."""
        prefix = f"sandbox_{role}" if sandbox else role
        try:
            return getattr(self, f"{prefix}_s3_access_key"), getattr(
                self, f"{prefix}_s3_secret_key"
            )
        except AttributeError:
            raise ValueError(f"no S3 user for role {role!r}") from None

    def airflow_passwords(self) -> dict[str, str]:
        """Each Airflow user's password (include/airflow_users.py)."""
        return {
            ADMIN_USER: self.airflow_admin_password,
            OPERATOR_USER: self.airflow_operator_password,
            VIEWER_USER: self.airflow_viewer_password,
        }


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def _write_env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# Generated by devstack on first start. Keep private; delete to rotate.\n"
    body += "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    tmp.replace(path)


def load_or_create(path: Path, env: Mapping[str, str] | None = None) -> Secrets:
    """Return the stack's credentials, generating and persisting missing ones."""
    env = os.environ if env is None else env
    stored = _read_env_file(path)
    rule = Rule.load()
    changed = False
    values: dict[str, str] = {}
    for name, make in _GENERATED.items():
        if env.get(name):
            value = env[name]
        elif stored.get(name):
            value = stored[name]
        else:
            value = make()
            stored[name] = value
            changed = True
        problem = rule.problem(name, value)
        if problem:
            raise SecretError(f"{problem}; unset it to have one generated, or set a strong value")
        values[name] = value
    if changed:
        _write_env_file(path, stored)
    return Secrets(
        s3_access_key=values["RTAP_S3_ACCESS_KEY"],
        s3_secret_key=values["RTAP_S3_SECRET_KEY"],
        pg_superuser_password=values["RTAP_PG_SUPERUSER_PASSWORD"],
        pg_password=values["RTAP_PG_PASSWORD"],
        airflow_db_password=values["RTAP_AIRFLOW_DB_PASSWORD"],
        airflow_admin_password=values["RTAP_AIRFLOW_ADMIN_PASSWORD"],
        airflow_operator_password=values["RTAP_AIRFLOW_OPERATOR_PASSWORD"],
        airflow_viewer_password=values["RTAP_AIRFLOW_VIEWER_PASSWORD"],
        airflow_fernet_key=values["RTAP_AIRFLOW_FERNET_KEY"],
        airflow_secret_key=values["RTAP_AIRFLOW_SECRET_KEY"],
        airflow_jwt_secret=values["RTAP_AIRFLOW_JWT_SECRET"],
        dashboard_db_password=values["RTAP_DASHBOARD_DB_PASSWORD"],
        dashboard_s3_access_key=values["RTAP_DASHBOARD_S3_ACCESS_KEY"],
        dashboard_s3_secret_key=values["RTAP_DASHBOARD_S3_SECRET_KEY"],
        stream_s3_access_key=values["RTAP_STREAM_S3_ACCESS_KEY"],
        stream_s3_secret_key=values["RTAP_STREAM_S3_SECRET_KEY"],
        warehouse_s3_access_key=values["RTAP_WAREHOUSE_S3_ACCESS_KEY"],
        warehouse_s3_secret_key=values["RTAP_WAREHOUSE_S3_SECRET_KEY"],
        **{
            name.removeprefix("RTAP_").lower(): values[name]
            for name in _GENERATED
            if name.startswith("RTAP_SANDBOX_")
        },
    )

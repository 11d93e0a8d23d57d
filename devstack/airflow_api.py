"""A minimal client of Airflow 3's REST API (v2), authenticated like a user who logs in."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class AirflowApiError(RuntimeError):
    pass


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._token: str | None = None

    def login(self) -> None:
        """Exchange username/password for a JWT, as the UI's login does."""
        body = {"username": self._username, "password": self._password}
        data = self._request("POST", "/auth/token", body, auth=False)
        self._token = data["access_token"]

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            if self._token is None:
                self.login()
            headers["Authorization"] = f"Bearer {self._token}"
        payload = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path, data=payload, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowApiError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        try:
            return self.get(f"/api/v2/dags/{urllib.parse.quote(dag_id)}")
        except AirflowApiError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/api/v2/importErrors").get("import_errors", [])

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dag(dag_id):
                return
            errors = [e for e in self.import_errors() if dag_id in e.get("filename", "")]
            if errors:
                raise AirflowApiError(
                    f"DAG file of {dag_id} has import errors: {errors[0]['stack_trace'][-800:]}"
                )
            time.sleep(2)
        raise AirflowApiError(
            f"DAG {dag_id} did not appear within {timeout:.0f}s (is the dag-processor running?)"
        )

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = "queued"
        while time.monotonic() < deadline:
            state = self.run(dag_id, run_id)["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise AirflowApiError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f}s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        quoted = urllib.parse.quote(run_id, safe="")
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def task_result(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """What a task returned (its XCom ``return_value``), e.g. a Spark app's report."""
        quoted = urllib.parse.quote(run_id, safe="")
        entry = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/"
            "return_value?stringify=false"
        )
        return entry["value"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        quoted = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")

    def delete_run(self, dag_id: str, run_id: str) -> None:
        quoted = urllib.parse.quote(run_id, safe="")
        self._request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")

    def create_backfill(
        self, dag_id: str, from_date: str, to_date: str, reprocess: str = "none"
    ) -> int:
        """A backfill of ``dag_id`` over the logical dates ``from_date``..``to_date`` (ISO);
        ``reprocess``: none, failed or completed (what to do with runs that exist)."""
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "reprocess_behavior": reprocess,
            "max_active_runs": 1,
        }
        return self._request("POST", "/api/v2/backfills", body)["id"]

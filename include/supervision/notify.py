"""Alerts of the platform: one function for our code, one Airflow notifier for callbacks.

Channels: the task log (always) and, when an Airflow connection named ``alerts_webhook``
exists (type ``http``; host = the URL, or ``host`` + ``schema``), a JSON POST to it - the
shape Slack/Mattermost/Teams incoming webhooks and most alert routers accept (``text``). E-mail
or Slack through their providers: add their notifiers next to ours in a DAG's callbacks
(``on_failure_callback=[PlatformNotifier(), SmtpNotifier(...)]``).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("rtap.alerts")

WEBHOOK_CONN_ID = "alerts_webhook"


def _webhook_url() -> str | None:
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(WEBHOOK_CONN_ID)
    except Exception:  # not configured
        return None
    host = conn.host or ""
    if "://" in host:
        return host
    return f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")


def alert(level: str, title: str, details: str = "", **fields: Any) -> None:
    """Log the alert and send it to the webhook, if one is configured. Never raises."""
    text = f"[{level.upper()}] {title}" + (f"\n{details}" if details else "")
    log.log(logging.ERROR if level in ("error", "critical") else logging.WARNING, "%s", text)
    url = _webhook_url()
    if not url:
        return
    body = json.dumps({"text": text, "level": level, "title": title, **fields}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            log.info("alert sent to %s: HTTP %s", WEBHOOK_CONN_ID, response.status)
    except Exception as exc:
        log.error("could not send the alert to %s: %s", WEBHOOK_CONN_ID, exc)


class PlatformNotifier(BaseNotifier):
    """``on_failure_callback`` / ``on_retry_callback`` of the platform's DAGs."""

    template_fields = ("level",)

    def __init__(self, level: str = "error") -> None:
        super().__init__()
        self.level = level

    def notify(self, context: Any) -> None:
        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(ti, "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        run_id = getattr(context.get("dag_run"), "run_id", None) or getattr(ti, "run_id", "?")
        error = context.get("exception")
        alert(
            self.level,
            f"{dag_id}.{task_id} failed (run {run_id}, try {getattr(ti, 'try_number', '?')})",
            str(error) if error else "",
            dag_id=dag_id,
            task_id=task_id,
            run_id=run_id,
        )

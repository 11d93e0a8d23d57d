"""Links the analysts' dashboard from the Airflow UI (an external view in the navigation).

The address comes from ``RTAP_DASHBOARD_URL`` (the devstack and the compose file set it);
without it the plugin adds nothing rather than a dead link.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

DASHBOARD_URL = os.environ.get("RTAP_DASHBOARD_URL", "").strip()


class DashboardLinkPlugin(AirflowPlugin):
    name = "rtap_dashboard"
    external_views = (
        [
            {
                "name": "Analytics dashboard",
                "href": DASHBOARD_URL,
                "destination": "nav",
                "category": "browse",
                "icon": None,
            }
        ]
        if DASHBOARD_URL
        else []
    )

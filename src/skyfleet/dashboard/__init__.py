"""The fleet dashboard: a static page served by the gateway plus a JSON state API.

`add_dashboard_routes(app, source)` mounts it on an aiohttp application; `FleetMonitor`
keeps the in-memory time series (also used by `skyfleet demo`'s terminal view).
"""

from skyfleet.dashboard.model import EndpointState, GatewaySample
from skyfleet.dashboard.monitor import FleetMonitor
from skyfleet.dashboard.routes import MONITOR_KEY, add_dashboard_routes
from skyfleet.dashboard.source import CallableSource, HttpSource, Source

__all__ = [
    "MONITOR_KEY",
    "CallableSource",
    "EndpointState",
    "FleetMonitor",
    "GatewaySample",
    "HttpSource",
    "Source",
    "add_dashboard_routes",
]

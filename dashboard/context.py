"""What the dashboard's pages and Bokeh documents are given: the parts they use, no more.

:mod:`dashboard.app` opens the parts (the manager client, the shared feed, the
InfluxDB reader, the login rules) and hands them to the routes and documents as
one :class:`ViewContext`. A view that needs less names less, as a Protocol here:
the charts read only the feed and InfluxDB, the overview only the manager and
InfluxDB. So nothing in ``dashboard/`` imports :mod:`dashboard.app`, which is
the wiring only, and a view can be built from just the parts it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dashboard.auth import Auth
from dashboard.feed import Feed
from dashboard.influx import InfluxReader
from dashboard.security import DashboardClient


class ChartSources(Protocol):
    """What a chart panel (:class:`dashboard.live.LiveState`) reads: live rows from the
    shared feed, the window's history from InfluxDB."""

    @property
    def feed(self) -> Feed: ...

    @property
    def influx(self) -> InfluxReader: ...


class FleetSources(Protocol):
    """What the overview (:mod:`dashboard.pages.overview`) reads: the manager's node and
    job lists, and the nodes' sparklines from InfluxDB."""

    @property
    def client(self) -> DashboardClient: ...

    @property
    def influx(self) -> InfluxReader: ...


@dataclass(frozen=True, slots=True)
class ViewContext:
    """What the pages and the ``/bk/live`` and ``/bk/job`` documents reach for: the
    manager (over bus), the feed, InfluxDB, and who may change what (``auth``)."""

    client: DashboardClient
    feed: Feed
    influx: InfluxReader
    auth: Auth

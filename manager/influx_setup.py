"""The InfluxDB clients ``[influxdb]`` asks for: the sink metric batches are
written to, and the InfluxQL client reports read from.

The manager builds them at start-up unless it is handed its own (tests pass a
:class:`~manager.sinks.MemorySink`).
"""

from __future__ import annotations

from config.schema import ServerConfig
from manager.sinks import InfluxV1Sink, Sink

#: Reading a long job's raw points takes longer than a write of one batch.
QUERY_TIMEOUT = 120.0


def make_sink(cfg: ServerConfig) -> Sink:
    """The InfluxDB sink ``[influxdb]`` asks for: v2 API with token, org and bucket, else v1."""
    db = cfg.influxdb
    if db.token and db.org and db.bucket:
        # Imported here: the v2 client pulls in influxdb_client and aiohttp.
        from manager.sinks.influx_v2 import InfluxV2Sink

        return InfluxV2Sink(db.url, db.token, db.org, db.bucket, timeout=db.timeout)
    return InfluxV1Sink(db.url, db.database, username=db.username or None,
                        password=db.password or None, token=db.token or None,
                        timeout=db.timeout)


def query_database(cfg: ServerConfig) -> str:
    """The database InfluxQL reads: ``database`` (v1), or the bucket for v2 users,
    as InfluxDB 2/3 map a bucket to a v1 database of the same name."""
    db = cfg.influxdb
    return db.bucket if db.token and db.org and db.bucket else db.database


def make_query_client(cfg: ServerConfig) -> InfluxV1Sink:
    """Where reports read from: InfluxQL on ``/query`` in every case. 1.x serves it
    natively; 2.x/3.x serve it as the v1-compatible endpoint, with the token."""
    db = cfg.influxdb
    return InfluxV1Sink(db.url, query_database(cfg), username=db.username or None,
                        password=db.password or None, token=db.token or None,
                        timeout=max(db.timeout, QUERY_TIMEOUT))

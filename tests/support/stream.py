"""The stream's Spark session as `streaming.run` sets it up, for tests that build its query themselves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from sensorstream.config import Settings
from sensorstream.streaming.plan import state_conf, stream_session


@contextmanager
def state_session(spark: SparkSession, settings: Settings) -> Iterator[SparkSession]:
    """The stream's session (`stream_session`) with the state store's settings of `settings`
    (`state_conf`, as `start_query` sets them), put back as they were on the way out."""
    session = stream_session(spark)
    saved = {key: session.conf.get(key, None) for key in state_conf(settings)}
    try:
        for key, value in state_conf(settings).items():
            session.conf.set(key, value)
        yield session
    finally:
        for key, value in saved.items():
            if value is None:
                session.conf.unset(key)
            else:
                session.conf.set(key, value)

"""A reading's fields, their units and physical ranges, and the kinds of reason a record is
rejected for: plain Python, no Spark.

The one place these facts are written. The simulator keeps its values inside the ranges, the
validator (`schema.py`) rejects what is outside them, the report labels its columns with the units,
and a test holds the READMEs' validation table to them.
"""

from __future__ import annotations

#: The measured quantities, in the order of the wire format and of every statistic.
METRICS = ("temperature", "humidity", "pressure")
#: The unit of each metric.
UNITS = {"temperature": "°C", "humidity": "%", "pressure": "hPa"}
#: The physical range of each metric, bounds included: a value outside is a reject.
RANGES = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pressure": (300.0, 1100.0),
}
#: Fields a reading must have (present and not null).
REQUIRED = ("sensor_id", "timestamp", *METRICS)
#: Fields a reading may have: a per-sensor sequence number and an id of the event.
OPTIONAL = ("seq", "event_id")
#: Every field of a reading, in the order of the wire format.
FIELDS = (*REQUIRED, *OPTIONAL)
#: The kinds of reason a record is rejected for, in the order they are checked (a reason is "<kind>"
#: or "<kind>: <detail>"): the dead letters', the report's and the stream's metrics' reason.
REASON_KINDS = ("invalid JSON", "missing field", "wrong type", "bad timestamp", "out of range")
#: What the stream's detector says of a sensor (STREAM_DETECT=on; jobs/jvm/detector).
ALERT_KINDS = ("spike", "stuck", "silent", "back")

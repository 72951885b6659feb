"""Everything the tests share, in one place; test modules import from here, never from each other.

    places    where things are (the checkout, the chart, the jars) and the pins of pom.xml and
              pyproject.toml
    readings  independent Python references (windows, reports, the validation contract), sample
              records, simulated clocks
    broker    settings isolated on the session broker, reading a topic back
    stream    the stream's Spark session with its state store's settings, as a run sets them
    cluster   the fault tests' three-broker cluster, its faults, the CLI in the background
    cli       the `sensorstream` command as a subprocess, and its one-line errors
    tls       a self-signed CA and a broker certificate (openssl), for the secured local broker
    chart     helm, the rendered chart, the operators' CRDs, the rehearsal module

The fixtures built on these are in tests/conftest.py and tests/chart/conftest.py.
"""

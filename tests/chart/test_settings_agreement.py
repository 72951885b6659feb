"""Each setting is declared once, as a field of `sensorstream.config.Settings`; everything that
restates it must agree with that declaration on the name, the default and the allowed values:

- the chart: the ConfigMap (or a workload's env) passes the declared values.yaml key (`chart=`) as
  the declared env var, unchanged (a boolean as on or off); values.yaml's default is the code's (but for the few kept on
  purpose below); values.schema.json accepts exactly the values the code accepts (but for the few
  narrowed on purpose below), so nothing installs that a pod would then refuse;
- the CLI: every declared flag exists on its commands and sets its setting;
- the READMEs: one row per setting in the settings table, in the order of the declarations, with
  its flag, its default and (for a fixed set of values) every allowed value.

Adding a setting is one declaration plus its use; these tests name whatever else has to follow.
"""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from sensorstream.cli import build_parser
from sensorstream.config import EVERY_COMMAND, SETTINGS, Setting, declaration, load_settings
from support.chart import render, settings_configmap, workload_env
from support.places import CHART, ROOT

pytestmark = pytest.mark.chart

VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
CHARTED = [s for s in SETTINGS if s.chart]

#: Settings whose chart default is the chart's own, on purpose (setting -> why).
CHART_DEFAULTS = {
    "checkpoint_location": "the checkpoint claim's mount path",
    "report_dir": "the reports claim's mount path",
    "report_formats": "a cluster keeps every format",
    "metrics_port": "a cluster is watched by Prometheus; locally the endpoints are off",
    "metrics_host": "in a pod the endpoints listen on every interface, for Prometheus to reach them",
}
#: Settings of which the chart accepts fewer values than the code, on purpose (setting -> why).
CHART_NARROWS = {
    "spark_master": "the report runs Spark inside its pod: local modes only",
    "checkpoint_location": "a claim is mounted at an absolute path",
    "report_dir": "a claim is mounted at an absolute path",
}
#: Env vars a workload gets that are not settings: none; the ConfigMap holds settings only.
#: Settings the chart passes but computes (from the release, a Secret, a mount): not `chart=` keys.
COMPUTED = {
    "bootstrap_servers",
    "ssl_ca_location",
    "ssl_cert_location",
    "ssl_key_location",
    "parquet_dir",
    "sasl_username",
    "sasl_password",
}

_CHOICES = [c for s in SETTINGS for c in s.choices or ()]
#: Values to try on a text setting: durations in many spellings, zero, names, every choice in any case.
TEXT_PROBES = [
    "",
    " ",
    "0",
    "-1",
    "7",
    "0.25",
    "0s",
    "0.0s",
    "0.5s",
    "5 minutes",
    "5 Minutes",
    "5 MINUTES",
    "5m",
    "300",
    "1.5h",
    "250ms",
    "2 days",
    "10 minutos",
    "five minutes",
    "-5m",
    "1e3s",
    "x",
    "a b",
    "readings.v2",
    "/data",
    "/srv/reports",
    "local",
    "local[2]",
    "local[*]",
    "spark://master:7077",
    "yarn",
    *dict.fromkeys(v for c in _CHOICES for v in (c, c.lower(), c.upper(), c.title())),
]
NUMBER_PROBES = [None, -1, 0, 0.25, 0.5, 0.75, 1, 1.5, 3, 7, 2**40]
#: A boolean key (a switch the chart passes as on or off): both values, and the look-alikes a values
#: file might hold instead (the template would take any non-empty string as true).
BOOLEAN_PROBES = [True, False, None, 0, 1, "true", "false", "yes", ""]


def list_probes(declared: Setting) -> list:
    choices = list(declared.choices or ())
    return [
        [],
        ["s3"],
        choices,
        choices[::-1],
        [choices[0], choices[0]],
        [choices[-1]],
        [choices[0].upper()],
        [choices[0], "s3"],
    ]


def probes(declared: Setting) -> list:
    default = lookup(VALUES, declared.chart)
    if isinstance(default, list):
        return list_probes(declared)
    if isinstance(default, bool):
        return BOOLEAN_PROBES
    if isinstance(default, str):
        return TEXT_PROBES
    return NUMBER_PROBES


def lookup(values: dict, dotted: str):
    for key in dotted.split("."):
        values = values[key]
    return values


def with_value(values: dict, dotted: str, value) -> dict:
    values = copy.deepcopy(values)
    *parents, last = dotted.split(".")
    node = values
    for key in parents:
        node = node[key]
    node[last] = value
    return values


def env_text(value) -> str:
    """A value as the ConfigMap passes it: lists comma-joined, null empty, booleans on or off,
    numbers as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(value)
    return value if isinstance(value, str) else json.dumps(value)


def code_parse(declared: Setting, text: str):
    """The typed value, or a marker for a refused one."""
    try:
        return declared.parse(text)
    except (ValueError, TypeError):
        return REFUSED


REFUSED = object()
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def chart_accepts(declared: Setting, value) -> bool:
    return not any(_VALIDATOR.iter_errors(with_value(VALUES, declared.chart, value)))


def canonical(declared: Setting, parsed) -> str:
    return ",".join(parsed) if isinstance(parsed, tuple) else str(parsed)


def examples() -> dict[str, object]:
    """For each charted setting, a value both the chart and the code take, other than the chart's
    default and, where the probes allow, other than every other setting's example (so that a
    template passing one key as another's env var shows)."""
    chosen: dict[str, object] = {}
    for declared in CHARTED:
        default = code_parse(declared, env_text(lookup(VALUES, declared.chart)))
        taken = {env_text(v) for v in chosen.values()}
        fits = [
            v
            for v in probes(declared)
            if code_parse(declared, env_text(v)) not in (REFUSED, default) and chart_accepts(declared, v)
        ]
        assert fits, f"no probe value for {declared.name} other than the default"
        chosen[declared.name] = next((v for v in fits if env_text(v) not in taken), fits[0])
    return chosen


def test_the_values_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert not list(_VALIDATOR.iter_errors(VALUES))


@pytest.mark.parametrize("declared", CHARTED, ids=lambda s: s.name)
def test_the_schema_takes_what_the_code_takes(declared):
    problems = []
    for value in probes(declared):
        parsed = code_parse(declared, env_text(value))
        chart = chart_accepts(declared, value)
        if chart and parsed is REFUSED:
            problems.append(
                f"the chart accepts {declared.chart}={value!r} but {declared.env} refuses it: "
                "a pod would install and then exit"
            )
        elif not chart and parsed is not REFUSED and declared.name not in CHART_NARROWS:
            normalized = declared.choices and canonical(declared, parsed) != env_text(value).strip()
            if not normalized:  # the code takes other spellings of a choice; the chart, the one it passes
                problems.append(f"{declared.env} accepts {value!r} but the chart refuses {declared.chart}={value!r}")
    assert not problems, "\n".join(problems)


def test_the_declared_chart_keys_exist_and_the_workloads_get_them(rendered):
    env = workload_env(rendered["default"])
    problems = []
    for declared in CHARTED:
        try:
            default = lookup(VALUES, declared.chart)
        except KeyError:
            problems.append(f"{declared.name}: values.yaml has no {declared.chart}")
            continue
        given = env.get(declared.env)
        if given is None or len(given) != 1:
            problems.append(f"{declared.env}: the workloads get {given} (one value wanted, from {declared.chart})")
            continue
        (text,) = given
        if code_parse(declared, text) != code_parse(declared, env_text(default)):
            problems.append(f"{declared.env}={text!r} is not {declared.chart}={default!r}")
        if declared.name not in CHART_DEFAULTS and code_parse(declared, text) != code_parse(declared, declared.default):
            problems.append(
                f"{declared.chart}={default!r} is not the code's default {declared.env}={declared.default!r}"
                " (or say why in CHART_DEFAULTS)"
            )
    assert not problems, "\n".join(problems)


def test_every_declared_chart_key_reaches_its_env_var(helm):
    """One render with every charted value changed: each env var follows its key, unchanged."""
    chosen = examples()
    sets = ["kafka.enabled=false", 'kafka.bootstrapServers="kafka:9092"']  # security settings need a foreign cluster
    sets += [f"{declared.chart}={json.dumps(chosen[declared.name])}" for declared in CHARTED]
    env = workload_env(render(helm, [], set_json=sets))
    for declared in CHARTED:
        given = env.get(declared.env, set())
        want = code_parse(declared, env_text(chosen[declared.name]))
        assert {text for text in given if code_parse(declared, text) == want} == given and given, (
            f"{declared.chart}={chosen[declared.name]!r} reached {declared.env} as {given}"
        )


def test_every_setting_the_workloads_get_is_declared_and_no_secret_is_in_a_configmap(rendered):
    by_env = {s.env: s for s in SETTINGS}
    for name, docs in rendered.items():
        configmap = settings_configmap(docs)
        assert set(configmap["data"]) <= set(by_env), f"{name}: not settings: {set(configmap['data']) - set(by_env)}"
        assert not [env for env in configmap["data"] if by_env[env].secret], f"{name}: a secret in the ConfigMap"
        assert set(workload_env(docs)) <= set(by_env) | {"SPARK_MASTER"}
    charted_or_computed = {s.name for s in CHARTED} | COMPUTED
    passed = {by_env[env].name for env in workload_env(rendered["default"])}
    assert passed <= charted_or_computed, f"passed by the chart without a `chart=` key: {passed - charted_or_computed}"


def test_the_sinks_the_settings_allow_are_the_streams_sinks():
    from sensorstream import streaming

    assert set(declaration("sinks").choices) == set(streaming._SINKS), (
        "a sink is a function in streaming._SINKS and its name in config.SINKS"
    )


# --- the CLI ---------------------------------------------------------------------------------

FLAGGED = [s for s in SETTINGS if s.flag]


@pytest.mark.parametrize("declared", FLAGGED, ids=lambda s: s.name)
def test_every_flag_sets_its_setting_on_each_of_its_commands(declared):
    text = next(
        p for p in TEXT_PROBES if code_parse(declared, p) not in (REFUSED, code_parse(declared, declared.default))
    )
    for command in declared.commands:
        argv = [declared.flag, text, "config", "show"] if command == EVERY_COMMAND else [command, declared.flag, text]
        args = build_parser().parse_args(argv)
        settings = load_settings(environ={}, overrides={declared.name: getattr(args, declared.name)})
        assert getattr(settings, declared.name) == declared.parse(text)
        assert settings.sources[declared.name] == "flag"


def test_help_shows_each_flag_with_its_env_var(capsys):
    for command in {c for s in FLAGGED for c in s.commands}:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--help"] if command == EVERY_COMMAND else [command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for declared in FLAGGED:
            if command in declared.commands:
                assert declared.flag in text and f"env {declared.env};" in text, (command, declared.name)


# --- the READMEs -----------------------------------------------------------------------------

_ENV_CELL = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def settings_table(readme: str) -> list[list[str]]:
    """The rows of a README's settings table: env var, flag, default, meaning."""
    rows = []
    for line in (ROOT / readme).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and _ENV_CELL.fullmatch(cells[0]):
            rows.append(cells)
    return rows


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


@pytest.mark.parametrize("readme", ["README.md", "README.es.md"])
def test_the_readme_settings_table_is_the_declarations(readme):
    rows = settings_table(readme)
    assert [row[0].strip("`") for row in rows] == [s.env for s in SETTINGS], (
        f"{readme}: the settings table must have one row per setting, in the order of config.Settings"
    )
    for (env, flag, default, meaning), declared in zip(rows, SETTINGS):
        assert flag == _code(declared.flag), f"{readme}: {env} has flag {flag!r}, not {_code(declared.flag)!r}"
        assert default == _code(declared.default), (
            f"{readme}: {env} has default {default!r}, not {_code(declared.default)!r}"
        )
        missing = [c for c in declared.choices or () if c not in meaning]
        assert not missing, f"{readme}: {env} does not name the allowed values {missing}"


def test_probes_cover_every_kind_of_charted_value():
    """The probes reach both sides of every rule: each charted setting has values taken and refused."""
    for declared in CHARTED:
        outcomes = {code_parse(declared, env_text(v)) is REFUSED for v in probes(declared)}
        assert outcomes == {True, False}, declared.name

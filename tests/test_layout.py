"""The repository's layout as the project promises it: the top level holds only the named entries,
and every relative link in the Markdown files points at a file that exists."""

import re
import subprocess

from support.places import ROOT

#: What the top level may hold (the layout in README.md, plus git's own ignore file).
TOP_LEVEL = {
    "jobs",
    "charts",
    "k8s",
    "tests",
    "Makefile",
    "pyproject.toml",
    "README.md",
    "README.es.md",
    "Dockerfile",
    ".ci",
    ".gitignore",
}

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_top_level_holds_only_the_named_entries():
    assert {path.split("/")[0] for path in _tracked()} <= TOP_LEVEL


def test_relative_links_in_markdown_resolve():
    broken = []
    for path in (p for p in _tracked() if p.endswith(".md")):
        md = ROOT / path
        for target in _LINK.findall(md.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (md.parent / target.split("#")[0]).exists():
                broken.append(f"{path}: {target}")
    assert not broken

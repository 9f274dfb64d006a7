"""The documentation keeps up with the code: every setting is on the configuration page with
its default, the README stays short, and no link points at a file or heading that is gone.

Pure text checks (no server, no model): they run in well under a second. The configuration
page's convention for defaults is stated at its top; ``written_default`` is that convention.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from rtc_server.config import Settings, env_name

from .helpers import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIGURATION = DOCS / "configuration.md"
README_MAX_LINES = 300
#: ``RTC_*`` names the pages may mention that are not server settings (test switches).
NOT_SETTINGS = frozenset({"RTC_TESTS_STRICT", "RTC_TEST_MODEL", "RTC_UPDATE_SCREENSHOT"})


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def written_default(value: Any) -> str:
    """A default as configuration.md writes it: as one would type it into the variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"  # 5.0 -> 5, 0.25 -> 0.25
    if isinstance(value, Path):
        if value.is_relative_to(ROOT):
            return str(value.relative_to(ROOT))  # the checkout's static/ -> static
        if value.is_relative_to(Path.home()):
            return "~/" + str(value.relative_to(Path.home()))
    return str(value)


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def configuration_rows() -> dict[str, list[str]]:
    """``RTC_NAME`` -> that row's cells (env, flag, default, meaning), every table of the page."""
    rows: dict[str, list[str]] = {}
    for line in CONFIGURATION.read_text().splitlines():
        if not line.startswith("| `RTC_"):
            continue
        cells = _cells(line)
        name = re.match(r"`(RTC_[A-Z0-9_]+)`", cells[0])
        assert name, line
        if name.group(1) in NOT_SETTINGS:  # the page's list of other variables
            continue
        assert name.group(1) not in rows, f"{name.group(1)} has two rows in {CONFIGURATION.name}"
        rows[name.group(1)] = cells
    return rows


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a server started with no configuration has them (home-relative caches)."""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return Settings()


def test_every_setting_is_documented_with_its_default(defaults: Settings) -> None:
    rows = configuration_rows()
    problems = []
    for field in fields(Settings):
        env = env_name(field.name)
        row = rows.get(env)
        if row is None:
            problems.append(f"{env} is missing")
            continue
        if len(row) != 4:
            problems.append(f"{env}: expected 4 cells (env, flag, default, meaning), got {len(row)}")
            continue
        flag = "`--" + field.name.replace("_", "-") + "`"
        if row[1] != flag:
            problems.append(f"{env}: flag cell {row[1]!r}, expected {flag!r}")
        written = row[2].strip("`")
        expected = written_default(getattr(defaults, field.name))
        if written != expected:
            problems.append(f"{env}: default written {written!r}, the code's is {expected!r}")
        if not row[3]:
            problems.append(f"{env}: no meaning")
    stale = set(rows) - {env_name(f.name) for f in fields(Settings)}
    problems += [f"{env} is documented but is no setting" for env in sorted(stale)]
    assert not problems, f"{CONFIGURATION.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_pages_name_only_real_settings() -> None:
    known = {env_name(f.name) for f in fields(Settings)} | NOT_SETTINGS
    unknown = []
    for page in pages():
        for name in sorted(set(re.findall(r"\bRTC_[A-Z0-9_]*[A-Z0-9]\b", page.read_text())) - known):
            unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert not unknown, "no such setting:\n" + "\n".join(unknown)


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _outside_code(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in _outside_code(page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(page: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", _outside_code(page.read_text()))


def test_relative_links_point_at_existing_files_and_headings() -> None:
    broken = []
    for page in pages():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_checks_catch_what_they_are_for() -> None:
    """The parsers above would pass vacuously if they found nothing."""
    assert len(configuration_rows()) >= len(fields(Settings))
    assert len(links(README)) >= 5 and "two-commands" in anchors(README)
    assert _slug("Pull sources: RTSP cameras, HTTP files, HLS") == "pull-sources-rtsp-cameras-http-files-hls"
    assert _slug("Several models, and A/B on one camera") == "several-models-and-ab-on-one-camera"
    assert written_default(5.0) == "5" and written_default(()) == "" and written_default(True) == "true"

"""The docs stay true to what they point at: every alert of deploy/monitoring/alerts.yml has
a runbook section in docs/operations.md (and a `runbook_url`, where a rule carries one,
points at it), every link between the README and docs/ resolves, anchors included, and
the README stays a short page for users.

Anchors are made as GitHub makes them from a heading: lower case, punctuation dropped
(backticks, dots, parentheses, apostrophes), spaces turned into hyphens, and `-1`, `-2`
appended to repeats.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from tests.test_monitoring import ALERTS, _alert_rules

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
OPERATIONS = DOCS / "operations.md"
RUNBOOK_HEADING = "Runbook"
# What each runbook section must say, in this order.
RUNBOOK_PARTS = ("**What it means.**", "**How to check.**", "**What to do")
README_MAX_LINES = 200
IMAGE_MAX_BYTES = 300 * 1024

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _without_code(text: str) -> str:
    """The text less its fenced code blocks and inline code (neither holds links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return frozenset(found)


def runbook_sections() -> dict[str, str]:
    """Each level-3 section under `## Runbook` in docs/operations.md: title -> body."""
    text = FENCE.sub("", OPERATIONS.read_text())
    start = re.search(rf"^## {RUNBOOK_HEADING}\s*$", text, re.MULTILINE)
    assert start is not None, f"docs/operations.md has no '## {RUNBOOK_HEADING}' section"
    rest = text[start.end():]
    end = re.search(r"^## ", rest, re.MULTILINE)
    runbook = rest[:end.start()] if end else rest
    parts = re.split(r"^### +(.+?)\s*$", runbook, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    alerts = {rule["alert"] for rule in _alert_rules()}
    sections = set(runbook_sections())
    assert alerts - sections == set(), (
        f"alerts in {ALERTS.relative_to(REPO)} without a '### <alert>' section under "
        f"'## {RUNBOOK_HEADING}' in docs/operations.md")
    assert sections - alerts == set(), "runbook sections for alerts that no longer exist"


@pytest.mark.parametrize("name", sorted(runbook_sections()))
def test_each_runbook_section_says_what_it_means_how_to_check_and_what_to_do(
        name: str) -> None:
    body = runbook_sections()[name]
    positions = [body.find(part) for part in RUNBOOK_PARTS]
    assert -1 not in positions, f"{name}: each of {RUNBOOK_PARTS} is needed"
    assert positions == sorted(positions), f"{name}: {RUNBOOK_PARTS} out of order"


def test_runbook_urls_point_at_their_section() -> None:
    for rule in _alert_rules():
        url = rule.get("annotations", {}).get("runbook_url")
        if url is None:
            continue
        page, _, anchor = url.partition("#")
        assert page.endswith("docs/operations.md"), (rule["alert"], url)
        assert anchor == github_anchor(rule["alert"]), (rule["alert"], url)
    assert {github_anchor(name) for name in runbook_sections()} <= anchors(OPERATIONS)


def test_github_anchor_is_githubs() -> None:
    assert github_anchor("Capacity (`python -m bench.capacity`)") == (
        "capacity-python--m-benchcapacity")
    assert github_anchor("The spool's replay") == "the-spools-replay"
    assert github_anchor("CalltrailSyncFailing") == "calltrailsyncfailing"
    assert github_anchor("Three-node cluster (`cluster-failover`)") == (
        "three-node-cluster-cluster-failover")


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(_without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == [], f"{page.relative_to(REPO)}: {broken}"


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < README_MAX_LINES
    first_block = FENCE.search(text)
    assert first_block is not None
    assert text.index(first_block.group()) < text.index("\n## "), "commands come first"
    commands = [line.split("#")[0].strip() for line in first_block.group().splitlines()[1:-1]]
    assert commands == ["make up", "make test"]


def test_the_readme_screenshot_is_committed_and_small() -> None:
    images = [REPO / target for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())]
    assert images, "the README shows the dashboard"
    for image in images:
        assert image.exists() and image.stat().st_size < IMAGE_MAX_BYTES, image

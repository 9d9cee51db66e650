"""Every ``method.md §N`` citation in the tree names a section that docs/method.md has, and no module points at
design notes outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"
SOURCES = [p for folder in ("microclip", "ui", "viz", "bench", "tests") for p in (ROOT / folder).rglob("*.py")]
SOURCES += [ROOT / name for name in ("README.md", "ARCHITECTURE.md", "app.py", "train.py", "evaluate.py")]
# "method.md §1.1, §12", "§4.2–4.5", "§3-§5": every number after the file name, up to the end of the clause
CITATION = re.compile(r"method\.md((?:[ ,;]*(?:and )?§?\d+(?:\.\d+)?b?(?:\s*[–-]\s*§?\d+(?:\.\d+)?b?)?)+)")
NUMBER = re.compile(r"\d+(?:\.\d+)?b?")


def headings() -> set[str]:
    found = set()
    for line in METHOD.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#{2,4} (\d+(?:\.\d+)?b?)\.? ", line)
        if match:
            found.add(match.group(1))
    return found


def citations() -> list[tuple[str, str]]:
    cited = []
    for path in SOURCES:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in CITATION.finditer(line):
                cited += [(f"{path.relative_to(ROOT)}: {line.strip()}", n) for n in NUMBER.findall(match.group(1))]
    return cited


def test_every_citation_resolves_to_a_heading():
    sections = headings()
    cited = citations()
    assert len(cited) > 20  # the parser found the citations (the code cites the method in many places)
    missing = [(where, number) for where, number in cited if number not in sections]
    assert not missing, missing


def test_the_citation_parser_reads_ranges_and_lists():
    line = "see docs/method.md §1.1, §12 and method.md §4.2–4.5; method.md §3-§5 (also §12b)"
    numbers = [n for m in CITATION.finditer(line) for n in NUMBER.findall(m.group(1))]
    assert numbers == ["1.1", "12", "4.2", "4.5", "3", "5"]


def test_citations_point_at_the_repositorys_own_notes():
    stale = [
        str(p.relative_to(ROOT))
        for p in SOURCES
        if p.is_file()
        and p.name != "test_docs.py"
        and re.search(
            r"shared/design|(?<![\w/])method\.md", p.read_text(encoding="utf-8").replace("docs/method.md", "")
        )
    ]
    assert not stale, stale


MARKDOWN = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


def test_the_slug_is_github_s():
    assert _slug(" The three missed rows") == "the-three-missed-rows"
    assert _slug("Round 45: what the right labels give") == "round-45-what-the-right-labels-give"
    assert _slug("The targets (issue 14)") == "the-targets-issue-14"


def test_every_relative_link_in_the_markdown_resolves():
    broken = []
    for page in MARKDOWN:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert len(MARKDOWN) >= 5 and not broken, broken


def test_the_toy_world_notes_list_every_section_in_their_contents():
    text = (ROOT / "docs" / "toyworld.md").read_text(encoding="utf-8")
    contents, _, rest = text.partition("## Contents\n")[2].partition("\n## ")
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    sections = [_slug(line.lstrip("#")) for line in ("## " + rest).splitlines() if re.match(r"#{2,3} ", line)]
    assert len(sections) > 40 and listed == sections, sorted(set(sections) ^ set(listed))

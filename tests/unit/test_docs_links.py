"""Every relative link of the README and docs/ leads somewhere: the file exists and, for a
link into a Markdown file's section, a heading makes that anchor (GitHub's rule). The
threshold race's summary links into its record by section; a renamed heading must not
leave a dead link behind."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"```.*?```", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def heading_anchors(markdown: Path) -> set[str]:
    """GitHub's anchors: the heading's text without markup, lower case, every character but
    letters, digits, spaces, hyphens and underscores dropped, spaces made hyphens; a repeated
    heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", markdown.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"`([^`]*)`", r"\1", match.group(2))
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        slug = "".join(c for c in text.lower() if c.isalnum() or c in " -_").replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(markdown: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", markdown.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = markdown.parent / path if path else markdown
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Ninth look: ε's window (2026-12-06)\n\n## Same\n\n## Same\n\n"
        "[ok](#ninth-look-εs-window-2026-12-06) [ok](#same-1) [dead](#tenth-look) "
        "[gone](missing.md) [web](https://example.org/x)\n\n```\n[in a fence](#nowhere)\n```\n"
    )
    assert broken_links(page) == ["#tenth-look (no such heading)", "missing.md (no such file)"]


def test_every_relative_link_of_the_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pages += sorted((REPO / "deploy").glob("*.md"))
    broken = {page.name: links for page in pages if (links := broken_links(page))}
    assert broken == {}

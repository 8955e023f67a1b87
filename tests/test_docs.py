"""Every relative link and image in README.md and docs/*.md points at a path that exists, and every `#anchor` at a
heading of the page it names (GitHub's slug rule). Fast: it reads markdown and nothing else.

    pytest -q tests/test_docs.py

Checked: inline links and images (`[text](path)`, `![alt](path)`, nested ones such as a linked image) and reference
definitions (`[name]: path`), outside fenced code blocks and code spans; http(s) and mailto links are left alone. A
path is relative to the page (`/path` to the repository root); `#anchor` alone is a heading of the page itself, and
`page.md#anchor` one of that page. Anchors of other kinds of files are not checked.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+).+?\1")
# `](target` of a link or an image; nested ones (a linked image) each have their own
DESTINATION = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=[\"']([^\"']+)[\"']", re.IGNORECASE)
INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def prose_lines(text: str):
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * 3
            continue
        if fence is not None:
            if line.lstrip().startswith(fence):
                fence = None
            continue
        yield number, line


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition outside code, external ones included."""
    found = []
    for number, line in prose_lines(text):
        line = CODE_SPAN.sub("code", line)
        targets = DESTINATION.findall(line) + REFERENCE.findall(line)
        found += [(number, target.strip("<>")) for target in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation but hyphens, underscores and spaces dropped,
    each space a hyphen (`Architecture search (`nni.nas`)` -> `architecture-search-nninas`)."""
    text = INLINE_LINK.sub(r"\1", heading)          # a link in a heading counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (a repeated one gets -1, -2, ... as on GitHub) and HTML anchors."""
    found, seen, previous = set(), {}, ""
    for _, line in prose_lines(text):
        found.update(HTML_ANCHOR.findall(line))
        atx = ATX_HEADING.match(line)
        setext = SETEXT_UNDERLINE.match(line) and previous.strip() and not previous.lstrip().startswith(("|", "#"))
        heading = atx.group(1) if atx else previous if setext else None
        previous = line
        if heading is None:
            continue
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """One line per link of `page` whose path is missing or whose anchor is not a heading of the page it names."""
    broken = []
    for number, target in links(page.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = unquote(target).partition("#")
        if path.startswith("/"):
            resolved = root / path.lstrip("/")
        else:
            resolved = (page.parent / path) if path else page
        where = f"{page.name}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where}: no such file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{where}: {resolved.name} has no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_exists(page):
    assert broken_links(page) == []


def test_the_docs_pages_are_checked():
    assert REPO / "docs" / "README.md" in PAGES, "docs/README.md, the map of the docs, is missing"


def test_links_finds_links_images_and_definitions_outside_code():
    text = "\n".join([
        "See [the docs](docs/README.md) and ![a chart](img/chart.png \"title\").",
        "[![badge](img/badge.svg)](https://example.org) and [mail](mailto:a@b.c)",
        "A [heading](#local-anchor), [a page's](faults.md#a-nan-loss) and [`code` text](results/x/).",
        "Not a link: `[code](span.md)`.",
        "```",
        "[fenced](fenced.md)",
        "```",
        "[ref]: <other page.md>",
    ])
    assert links(text) == [
        (1, "docs/README.md"), (1, "img/chart.png"),
        (2, "img/badge.svg"), (2, "https://example.org"), (2, "mailto:a@b.c"),
        (3, "#local-anchor"), (3, "faults.md#a-nan-loss"), (3, "results/x/"),
        (8, "other page.md"),
    ]


@pytest.mark.parametrize("heading, anchor", [
    ("Architecture search (`nni.nas`)", "architecture-search-nninas"),
    ("Load: many short trials through the real machinery", "load-many-short-trials-through-the-real-machinery"),
    ("Which search strategy to use when (Fashion-MNIST, 10 minutes, 3 repeats)",
     "which-search-strategy-to-use-when-fashion-mnist-10-minutes-3-repeats"),
    ("ResNet-20 under the reports' protocols", "resnet-20-under-the-reports-protocols"),
    ("CIFAR-10 on a CPU with bfloat16: 90.61%, under airbench94 (90.92%)",
     "cifar-10-on-a-cpu-with-bfloat16-9061-under-airbench94-9092"),
    ("`fixed_tpe` and [the docs](docs/README.md)", "fixed_tpe-and-the-docs"),
])
def test_slug_follows_githubs_rule(heading, anchor):
    assert slug(heading) == anchor


def test_anchors_number_repeated_headings_and_skip_code():
    text = "# Title\n\n## `Measured`\n\n```\n# not a heading\n```\n\n## Measured\n\nSetext\n------\n<a id=\"here\"></a>\n"
    assert anchors(text) == {"title", "measured", "measured-1", "setext", "here"}


def test_broken_links_are_reported(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "chart.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# Page",
        "[fine](other.md#a-section) ![fine](img/chart.png) [fine](#page) [fine](/other.md) [web](https://x.invalid/y)",
        "[missing file](nowhere.md)",
        "![missing image](img/none.png)",
        "[missing anchor](other.md#no-such-section)",
        "[missing local anchor](#no-such-heading)",
    ]))
    broken = broken_links(page, root=tmp_path)
    assert [line.split(": ")[1] for line in broken] == [
        "nowhere.md", "img/none.png", "other.md#no-such-section", "#no-such-heading"]
    assert [line.split(":")[1] for line in broken] == ["3", "4", "5", "6"]

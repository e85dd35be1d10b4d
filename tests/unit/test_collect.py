"""docs/results.md: the generated models table is replaced between markers, the rest is kept."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from stream_detector.evaluation.collect import BEGIN, END, update_between_markers

REPO = Path(__file__).resolve().parents[2]


def test_only_the_marked_block_changes() -> None:
    doc = f"# R\n\nintro\n{BEGIN}\nold table\n{END}\n\n## Written by hand\n\nkeep me\n"
    new = update_between_markers(doc, "| new | table |")
    assert (
        new == f"# R\n\nintro\n{BEGIN}\n| new | table |\n{END}\n\n## Written by hand\n\nkeep me\n"
    )
    assert update_between_markers(new, "| new | table |") == new


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(click.UsageError, match="models-table"):
        update_between_markers("# no markers", "x")


def test_results_md_has_one_marked_block() -> None:
    text = (REPO / "docs" / "results.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index("| telemanom (published run)") < text.index(END)

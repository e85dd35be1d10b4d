"""Build docs/results.md from evaluation runs: `python -m stream_detector.evaluation.collect`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

HEADER = """# Results on SMAP and MSL

Produced by `make evaluate` (one `stream-detector evaluate --dataset both` run per model, then
`python -m stream_detector.evaluation.collect`). Per channel: train on its train split, stream
its test split through the daemon's own engine (causal, in order), alerts' episodes are the
predicted sequences. P, R, F1 and F0.5 follow telemanom's event rule; **composite F1**
(event recall with point-wise precision, Garg et al. 2021) is the ranking number, because the
event rule alone rewards flagging everything: read it beside "flagged", the fraction of test
points inside predicted sequences. ROC/PR AUC are point-wise over the raw window scores (mean
over label rows). Delay is the mean number of steps from a found label's start to its first
flagged point. telemanom's own published run, scored by the same code on the same label rows,
is the reference row.
"""


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "" if x is None else format(x, fmt)


def results_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| model | data | ch. | P | R | F1 | F0.5 | flagged | composite F1 | ROC AUC | PR AUC "
        "| delay | train s/ch | score steps/s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    refs: dict[str, dict[str, Any]] = {}
    for run in runs:
        kind = run["recipe"]["kind"]
        for row in run["rows"]:
            m = row["metrics"]
            refs.setdefault(f"{row['spacecraft']}:{m['channels']}", row["telemanom"])
            lines.append(
                f"| {kind} | {row['spacecraft']} | {m['channels']} | {m['precision']:.3f} | "
                f"{m['recall']:.3f} | {m['f1']:.3f} | {m['f05']:.3f} | "
                f"{m['flagged_fraction']:.1%} | **{m['composite_f1']:.3f}** | "
                f"{_f(row['roc_auc'])} | {_f(row['pr_auc'])} | {_f(m['mean_delay'], '.0f')} | "
                f"{row['train_s_per_channel']:.1f} | {_f(row['score_steps_per_s'], ',.0f')} |"
            )
    for key, m in sorted(refs.items()):
        craft = key.split(":")[0]
        lines.append(
            f"| telemanom (published run) | {craft} | {m['channels']} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | {m['f1']:.3f} | {m['f05']:.3f} | {m['flagged_fraction']:.1%} | "
            f"**{m['composite_f1']:.3f}** | | | {_f(m['mean_delay'], '.0f')} | | |"
        )
    return "\n".join(lines)


BEGIN, END = "<!-- models-table:begin -->", "<!-- models-table:end -->"


def models_section(runs: list[dict[str, Any]]) -> str:
    lines = [results_table(runs), "", "Configurations:", ""]
    for run in runs:
        lines.append(
            f"- `{run['recipe']['kind']}`: `{json.dumps(run['recipe'])}`; threshold "
            f"`{json.dumps(run['threshold'])}`; alerts `{json.dumps(run['alerts'])}`"
        )
    return "\n".join(lines)


def update_between_markers(document: str, section: str) -> str:
    """Replace what lies between the markers; everything else is hand-written and kept."""
    if BEGIN not in document or END not in document:
        raise click.UsageError(f"the document has no {BEGIN} ... {END} block to update")
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{section}\n{END}{tail}"


@click.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--update",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Rewrite the models table between the markers of this file (docs/results.md) "
    "instead of printing a new document.",
)
def main(run_dirs: tuple[Path, ...], update: Path | None) -> None:
    """A results table (markdown) from evaluation output folders (their summary.json)."""
    runs = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    if not runs:
        raise click.UsageError("give one or more evaluation folders")
    section = models_section(runs)
    if update is not None:
        update.write_text(update_between_markers(update.read_text(), section))
        click.echo(f"updated {update}")
        return
    click.echo(HEADER)
    click.echo(f"{BEGIN}\n{section}\n{END}")


if __name__ == "__main__":
    sys.exit(main())

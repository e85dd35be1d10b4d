"""telemanom's published runs, scored by our scorer on our label rows.

The 2018-05-19 run ships with the data (``reference/``) and is the reference row of every
results table, and the issue's bar. Any other results file of telemanom's, such as the
2019-11-14 run of its refactored code (``results/2019-11-14_11.34.30.csv`` in
khundman/telemanom), is scored the same way:

    python -m stream_detector.evaluation.reference 2019-11-14_11.34.30.csv

A run's predicted sequences are its ``tp_sequences`` ∪ ``fp_sequences``, compared with the
rows of ``labeled_anomalies.csv`` as published: the file's rows must be the label file's 82,
in its order (P-2 twice), whatever labels the run itself carried.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import click

from stream_detector.data.smap_msl import load_labels
from stream_detector.evaluation.metrics import ChannelCounts, count_channel, summarise

REFERENCE_FILE = Path("reference") / "telemanom-2018-05-19.csv"


def score_telemanom_run(
    path: str | Path, root: str | Path, spacecraft: str | None = None
) -> list[ChannelCounts]:
    """Counts of a telemanom results file's predicted sequences, one per label row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"telemanom results file not found at {path}")
    with path.open(newline="") as handle:
        predictions = [
            (
                row["chan_id"],
                # The files mix JSON lists and Python tuple reprs; literal_eval reads both.
                [
                    (int(s), int(e))
                    for field in ("tp_sequences", "fp_sequences")
                    for s, e in ast.literal_eval(row[field])
                ],
            )
            for row in csv.DictReader(handle)
        ]
    labels = load_labels(root)
    run_channels = [chan for chan, _ in predictions]
    if run_channels != [row.chan_id for row in labels]:
        raise ValueError(
            f"{path} does not hold the label file's {len(labels)} rows in its order "
            f"({len(run_channels)} rows, first {run_channels[:3]})"
        )
    return [
        count_channel(row.chan_id, row.anomaly_sequences, predicted, row.num_values)
        for row, (_, predicted) in zip(labels, predictions, strict=True)
        if spacecraft is None or row.spacecraft == spacecraft
    ]


def telemanom_reference(root: str | Path, spacecraft: str | None = None) -> list[ChannelCounts]:
    """telemanom's 2018-05-19 run (the reference row), one count per label row."""
    return score_telemanom_run(Path(root) / REFERENCE_FILE, root, spacecraft)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="SMAP/MSL folder [default: SD_DATA__ROOT].",
)
def main(runs: tuple[Path, ...], data_root: Path | None) -> None:
    """Score telemanom results files (RUNS: CSVs of its ``results/`` folder) by the event
    rule and composite F1 on the label file's rows, beside the 2018-05-19 reference run."""
    from stream_detector.settings import Settings

    root = data_root or Settings().data.root
    named = [("2018-05-19 (reference)", Path(root) / REFERENCE_FILE)]
    named += [(run.stem, run) for run in runs]
    click.echo(
        "| telemanom run | data | P | R | F1 | composite F1 | flagged | found | false |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    try:
        for craft in ("SMAP", "MSL"):
            for name, path in named:
                m = summarise(score_telemanom_run(path, root, craft))
                click.echo(
                    f"| {name} | {craft} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | "
                    f"{m.composite_f1:.3f} | {m.flagged_fraction:.1%} | {m.tp} | {m.fp} |"
                )
    except (FileNotFoundError, ValueError, KeyError, SyntaxError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()

"""A replay's episode counts, recorded, and what the threshold race reads from them.

A cross-fitted replay (`crossfit_replay`) costs two trainings per channel, hours of this
machine's CPUs, and its fold models do not outlive the machine they were trained on. What the
race reads from it is small: per threshold and data set, the episodes raised and the steps
scored. Recorded in a JSON file (`crossfit_replay --save-counts`), those counts let a later
session rank the thresholds against a grid's test streams (`proxy-check`'s transfer test) and
run rule v5 without the fold models, and let two sessions' halves of one stream (one data set
each) be read together.

    python -m stream_detector.evaluation.replay_counts docs/replay-counts/lstm_dt_np10-gpu.json \\
        --thresholds docs/threshold-race-lstm-dt.json --against artifacts/eval/race-default
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from stream_detector.evaluation.threshold_grid import (
    ThresholdVariant,
    VariantResult,
    incumbent_variant,
    injected_crafts,
    load_grid,
    load_results,
    race_decision,
)
from stream_detector.evaluation.train_replay import (
    ReplayCount,
    agreement_lines,
    replay_agreement,
    replay_options,
    replay_table,
)
from stream_detector.settings import Settings

__all__ = [
    "FORMAT",
    "Counts",
    "decision_lines",
    "load_counts",
    "no_noisier_than",
    "replay_report",
    "save_counts",
]

FORMAT = "stream-detector replay counts v1"

# variant name → spacecraft → its episodes and scored steps on the replayed stream
Counts = dict[str, dict[str, ReplayCount]]


def save_counts(
    path: Path,
    counts: Counts,
    *,
    stream: str,
    grid: Path,
    left_out: Sequence[str] = (),
    recipe: dict[str, Any] | None = None,
    source: str = "",
    shard: str | None = None,
) -> None:
    """Write `counts` with what they are counts of: the stream, the grid, the channels left
    out, the recipe of the models that scored it, free text on where they came from, and the
    share of the channels it counted (`shard` "I/N", None for every channel asked)."""
    document = {
        "format": FORMAT,
        "stream": stream,
        "grid": str(grid),
        "shard": shard,
        "recipe": recipe,
        "source": source,
        "left_out": list(left_out),
        "counts": {
            name: {craft: {"episodes": c.episodes, "steps": c.steps} for craft, c in by.items()}
            for name, by in counts.items()
        },
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def load_counts(
    paths: Sequence[Path], variants: Sequence[ThresholdVariant] | None = None
) -> tuple[Counts, list[str], str]:
    """The counts of one or more recorded files, merged, with the channels they left out and
    the stream's name. Each data set comes from one file, or from the shares of one sharded
    run (`--shard I/N`), which are summed and must all be there. With `variants`, each file
    must count exactly the grid's variants: counts of another grid would rank other
    thresholds under the same names."""
    merged: Counts = {}
    left_out: list[str] = []
    streams: set[str] = set()
    shares: dict[int, set[int]] = {}  # N → the I of each share read
    whole: set[str] = set()  # data sets read from an unsharded file
    sharded: set[str] = set()
    for path in paths:
        document = json.loads(Path(path).read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"{path} is not a file of recorded replay counts ({FORMAT})")
        streams.add(document["stream"])
        counts = document["counts"]
        if variants is not None and set(counts) != {v.name for v in variants}:
            missing = sorted({v.name for v in variants} - set(counts))
            extra = sorted(set(counts) - {v.name for v in variants})
            raise ValueError(
                f"{path} counts another grid's variants (not counted: {missing or 'none'}; "
                f"not in the grid: {extra or 'none'})"
            )
        shard = document.get("shard")
        if shard is not None:
            index, count = (int(part) for part in shard.split("/"))
            if index in shares.setdefault(count, set()):
                raise ValueError(f"share {shard} is given twice")
            shares[count].add(index)
        crafts = {craft for by_craft in counts.values() for craft in by_craft}
        clash = crafts & whole if shard is not None else crafts & (whole | sharded)
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} is counted in more than one file")
        (sharded if shard is not None else whole).update(crafts)
        for name, by_craft in counts.items():
            into = merged.setdefault(name, {})
            for craft, c in by_craft.items():
                total = into.setdefault(craft, ReplayCount())
                total.episodes += int(c["episodes"])
                total.steps += int(c["steps"])
        left_out.extend(document.get("left_out", []))
    if len(streams) > 1:
        raise ValueError(f"the files count different streams: {', '.join(sorted(streams))}")
    if len(shares) > 1:
        raise ValueError(f"the shares come from runs cut {' and '.join(map(str, shares))} ways")
    for count, read in shares.items():
        if read != set(range(count)):
            absent = ", ".join(f"{i}/{count}" for i in sorted(set(range(count)) - read))
            raise ValueError(f"a sharded run's counts need every share: {absent} not given")
    return merged, left_out, streams.pop() if streams else ""


def no_noisier_than(counts: Counts, incumbent: str) -> Callable[[str], bool]:
    """Rule v5's quiet filter (docs/threshold-race.md, thirtieth look): a variant qualifies if it
    raises no more episodes per 1,000 steps of the cross-fitted train than `incumbent` does, on
    each data set the incumbent was replayed on. The incumbent always qualifies; a variant
    not replayed does not."""
    if incumbent not in counts:
        raise ValueError(f"the incumbent {incumbent!r} was not replayed")
    bar = counts[incumbent]

    def quiet(name: str) -> bool:
        if name == incumbent:
            return True
        mine = counts.get(name, {})
        return all(craft in mine and mine[craft].per_1k <= c.per_1k for craft, c in bar.items())

    return quiet


def decision_lines(counts: Counts, results: dict[str, VariantResult], incumbent: str) -> str:
    """Rule v5 on a grid's `results`, its quiet half read from the replay's `counts`: the
    qualifying variants and the verdict (`race_decision`). Refused unless the replay covers
    every data set the grid's injected runs do, since the rule judges each one."""
    crafts = set(injected_crafts(results))
    replayed = set(counts.get(incumbent, {}))
    if not crafts <= replayed:
        raise ValueError(
            "rule v5 needs the cross-fitted train of every data set the grid judges "
            f"({', '.join(sorted(crafts))}); replayed: {', '.join(sorted(replayed)) or 'none'}"
        )
    quiet = no_noisier_than(counts, incumbent)
    qualified = [n for n in results if not results[n].oracle and quiet(n)]
    decision = race_decision(results, incumbent, quiet=quiet)
    return (
        "rule v5 (docs/threshold-race.md, thirtieth look; no test label read): "
        f"{len(qualified)} variants raise no more episodes per 1k cross-fitted steps than "
        f"the default on each data set; {decision.explain()}"
    )


def replay_report(
    counts: Counts,
    stream: str,
    grid: Path,
    against: Path | None,
    decide: bool,
    settings: Settings,
) -> str:
    """What a replay prints: its table, and with `against` (a grid's results over the same
    thresholds) the transfer test beside the held-out part, and with `decide` rule v5's
    verdict. Raises ValueError where rule v5 cannot judge."""
    parts = [replay_table(counts, stream=stream)]
    if against is not None:
        results = load_results(against)
        parts.append(agreement_lines(replay_agreement(counts, results), stream))
        if decide:
            incumbent = incumbent_variant(load_grid(grid), settings)
            if incumbent is None:
                raise ValueError("the grid has no variant the settings build")
            parts.append(decision_lines(counts, results, incumbent))
    return "\n".join(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@replay_options
@click.option(
    "--decide",
    is_flag=True,
    help="with --against: also print rule v5's verdict, its quiet half these counts",
)
def main(files: tuple[Path, ...], grid: Path, against: Path | None, decide: bool) -> None:
    """Read recorded replay counts (`crossfit_replay --save-counts`; several files, one data
    set each, are merged) and print what the replay itself prints from them, without the
    models that made them (label-free; a diagnostic that chooses nothing but rule v5's verdict)."""
    if decide and against is None:
        raise click.UsageError("--decide judges a grid's results: give them with --against")
    try:
        counts, left_out, stream = load_counts(files, load_grid(grid))
        click.echo(replay_report(counts, stream, grid, against, decide, Settings()))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if left_out:
        click.echo("left out: " + ", ".join(left_out))


if __name__ == "__main__":
    main()

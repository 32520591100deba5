"""Replicates run one at a time (one per call on a machine lent for minutes), as one table.

Each input is a `results/summary.csv` of a run with `replicates: 1`, the experiment's seed set to
the replicate's number (`bash benchmarks/gpu_workflow.sh OUT CONFIG SEED` does this): the same
computation as replicate SEED of a `replicates: N` run. The runs are paired by their `seed`
column; prints each arm's mean ± sd and the paired differences stage 2 − stage 1 and
stage 2 − control with their 95% Student t intervals, as the report does for replicates:

    python benchmarks/merge_replicates.py rep0/summary.csv rep1/summary.csv rep2/summary.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clusteralign.report.replicates import interval_text
from clusteralign.report.statistics import PER_QUERY_METRICS, mean_sd, t_interval

ARMS = ("stage1", "stage2", "stage2_control")


def merged(paths: list[Path]) -> pd.DataFrame:
    """The runs' own-dataset rows, one per seed and arm; an error names a file that does not fit."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except OSError as err:
            raise SystemExit(f"{path}: cannot be read ({err.strerror or err})") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise SystemExit(f"{path}: not a summary.csv ({err})") from None
        missing = {"experiment", "dataset", "test_dataset", "arm", "seed", *PER_QUERY_METRICS} - set(frame.columns)
        if missing:
            raise SystemExit(f"{path}: not a summary.csv: no column(s) {', '.join(sorted(missing))}")
        frames.append(frame[frame["test_dataset"] == frame["dataset"]].assign(source=str(path)))
    rows = pd.concat(frames, ignore_index=True)
    twice = rows[rows.duplicated(["experiment", "arm", "seed"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        raise SystemExit(f"seed {first['seed']} of {first['experiment']} appears in more than one run: "
                         f"{', '.join(sorted(set(twice['source'])))}")
    return rows


def report(rows: pd.DataFrame) -> list[str]:
    lines = []
    for experiment, exp in rows.groupby("experiment", sort=True):
        table = exp.pivot(index="seed", columns="arm", values=list(PER_QUERY_METRICS))
        seeds = sorted(exp["seed"].unique())
        lines.append(f"{experiment}: {len(seeds)} replicates (seeds {', '.join(map(str, seeds))})")
        lines.append(f"  {'arm':<28}" + "".join(f"{m:>22}" for m in PER_QUERY_METRICS))
        for arm in ARMS:
            if arm not in set(exp["arm"]):
                continue
            cells = [mean_sd(table[(m, arm)].dropna().tolist()) for m in PER_QUERY_METRICS]
            lines.append(f"  {arm:<28}" + "".join(f"{100 * mu:>14.1f} ± {100 * sd:<5.1f}" for mu, sd in cells))
        for base in ("stage1", "stage2_control"):
            if {base, "stage2"} <= set(exp["arm"]):
                cells = [_difference(table, m, base) for m in PER_QUERY_METRICS]
                lines.append(f"  {'stage2 - ' + base + ' (pp)':<28}" + "".join(f"{c:>22}" for c in cells))
    return lines


def _difference(table: pd.DataFrame, metric: str, base: str) -> str:
    both = table[[(metric, base), (metric, "stage2")]].dropna()
    differences = (both[(metric, "stage2")] - both[(metric, base)]).tolist()
    return interval_text(t_interval(differences)) if len(differences) > 1 else "one replicate"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="+", type=Path, help="summary.csv files, one replicate each")
    args = p.parse_args()
    print("\n".join(report(merged(args.summaries))))


if __name__ == "__main__":
    sys.exit(main())

"""Sweep report: ``python -m cutlight.cli.report SWEEP_DIR [--wandb auto|on|off]`` (``cutlight-report``).

Writes ``summary.csv``, ``summary.md``, ``ablation.png``, ``curves.png`` (and ``seeds.csv``, the W&B report run) into
the multirun folder (``cutlight.reports.sweep``) and prints the table.
"""

from __future__ import annotations

import argparse
import sys

from ..reports.jobs import NotASweepError
from ..reports.sweep import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cutlight-report",
        description="Summarise a Hydra multirun of cutlight-train: summary.csv/.md, ablation.png, curves.png.")
    parser.add_argument("sweep_dir", help="the multirun folder (hydra.sweep.dir), e.g. multirun/<date>_<time>")
    parser.add_argument("--wandb", choices=["auto", "on", "off"], default="auto",
                        help="log the table and figures to a W&B 'report' run (auto: when the jobs logged to W&B)")
    parser.add_argument("--baseline", default=None,
                        help="the configuration (its overrides other than seed, e.g. 'ablation=cut') every other "
                             "one is compared with seed by seed; default: ablation=cut when the sweep has it")
    parser.add_argument("--quiet", action="store_true", help="print only where the files are")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, wandb=args.wandb, quiet=args.quiet, baseline=args.baseline)
    except (FileNotFoundError, NotASweepError, ValueError) as e:
        print(f"cutlight-report: error: {e}", file=sys.stderr)
        return 2
    sweep = path.parent
    if not args.quiet:
        print((sweep / "summary.md").read_text().split("\n## Figures")[0])
    print(f"sweep report: {sweep}\n  table:   {sweep / 'summary.md'} ({path.name})")
    if (sweep / "seeds.csv").exists():
        print(f"  seeds:   {sweep / 'seeds.csv'}")
    print(f"  figures: {sweep / 'ablation.png'}, {sweep / 'curves.png'}"
          + (f", {sweep / 'comparison.png'}" if (sweep / "comparison.png").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

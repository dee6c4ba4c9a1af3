"""`segments`: run the segmentation flow, or generate the synthetic demo data, from a terminal."""

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from flows.parameters import CLI_FLAGS, SegmentationParameters
from tasks.errors import SegmentsError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `segments` console script; returns the exit code."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.handler(arguments)
    except (SegmentsError, ValidationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segments", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the customer-segmentation flow and publish its artifacts")
    for name, field in SegmentationParameters.model_fields.items():
        flag = "--" + CLI_FLAGS.get(name, name.replace("_", "-"))
        repeated = name in CLI_FLAGS
        run.add_argument(flag, dest=name, action="append" if repeated else "store",
                         help=field.description + (" (repeat the flag for several)" if repeated else ""))
    run.set_defaults(handler=run_flow)

    generate = commands.add_parser("generate", help="write synthetic demo transactions and their planted archetypes")
    generate.add_argument("--output", type=Path, default=Path("demo-data"), help="directory to write into")
    generate.add_argument("--lines", type=int, default=200_000, help="approximate number of invoice lines")
    generate.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    generate.set_defaults(handler=generate_data)
    return parser


def parameters_from(arguments: argparse.Namespace) -> SegmentationParameters:
    """Validated flow parameters from the given flags; unset flags keep the model's defaults."""
    given = {name: value for name, value in vars(arguments).items()
             if name in SegmentationParameters.model_fields and value is not None}
    if "column_mapping" in given:
        given["column_mapping"] = dict(pair.split("=", 1) for pair in given["column_mapping"] if "=" in pair)
    return SegmentationParameters(**given)


def run_flow(arguments: argparse.Namespace) -> int:
    params = parameters_from(arguments)
    # Set before Prefect is imported: a local run needs no usage statistics, and on a busy
    # 2-core machine the temporary API server can take longer than Prefect's 20 s default to start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.segmentation import customer_segmentation

    state = customer_segmentation(params, return_state=True)
    if not state.is_completed():
        print(f"error: the run ended {state.name}: {state.message}", file=sys.stderr)
        return 1
    summary = state.result()
    print(
        f"\nRun {summary.run_id} completed.\n"
        f"  rows in           {summary.raw_rows:>12,}\n"
        f"  rows quarantined  {summary.quarantined_rows:>12,}\n"
        f"  clean rows        {summary.clean_rows:>12,}\n"
        f"  customers         {summary.customers:>12,}\n"
        f"  segments          {summary.segments:>12,}  (+ outliers: {summary.outlier_share:.1%} of customers)\n"
        f"  report            {summary.report_url}\n"
        f"  manifest          {summary.manifest_url}"
    )
    return 0


def generate_data(arguments: argparse.Namespace) -> int:
    from tasks.generate import write_generated

    transactions, archetypes = write_generated(arguments.output, arguments.lines, seed=arguments.seed)
    print(f"Wrote {transactions} and {archetypes}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

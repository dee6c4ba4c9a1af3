"""`python -m bench [--full]`: time the project against DuckDB and pandas, clustering at scale and the whole flow.

--quick (the default) measures the real data and 5M generated lines, clustering of 50k customers
(with the exact fit for comparison), the whole flow on the real data, and on 5M lines streamed and
partitioned on Dask (monthly files). --full adds 50M lines, clustering of 200k (with the exact fit)
and 1M customers, and the whole flow on 50M lines streamed and partitioned.
Generated inputs are written once to BENCH_DATA_DIR (default ~/.cache/retail-segments-bench),
outside the repository; results go to bench/results/latest.json and latest.md.
"""

import argparse
import sys
from pathlib import Path

from bench.inputs import DEFAULT_CACHE, REPOSITORY, generated_inputs, monthly_files, real_input
from bench.run import Plan, run_benchmark

QUICK_LINES, FULL_LINES = (5_000_000,), (5_000_000, 50_000_000)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="real data and 5M lines (default)")
    size.add_argument("--full", action="store_true", help="also 50M lines and 1M customers: takes about an hour")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement, median reported (default 3)")
    parser.add_argument("--memory-cap-gb", type=float, default=12.0, help="kill a run past this RSS (default 12)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE, help="where generated inputs are cached")
    parser.add_argument("--output", type=Path, default=REPOSITORY / "bench" / "results", help="results folder")
    return parser.parse_args(argv)


def build_plan(arguments: argparse.Namespace) -> Plan:
    """The inputs and sizes for --quick or --full."""
    real = real_input()
    generated = {lines: generated_inputs(lines, arguments.data_dir) for lines in (FULL_LINES if arguments.full else QUICK_LINES)}
    largest_parquet = generated[max(generated)][0]
    return Plan(
        line_inputs=tuple(([real] if real else []) + [item for pair in generated.values() for item in pair]),
        repeats=arguments.repeats,
        customer_base=largest_parquet.path,
        customer_counts=(50_000, 200_000, 1_000_000) if arguments.full else (50_000,),
        exact_counts=(50_000, 200_000) if arguments.full else (50_000,),
        flow_input=real,
        large_flow_inputs=tuple(pair[0] for pair in generated.values()),
        partitioned_input=monthly_files(largest_parquet),
        memory_cap_mb=arguments.memory_cap_gb * 1024,
    )


def main(argv: list[str] | None = None) -> int:
    """Build the plan, run it, print the markdown tables."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    results_folder = arguments.output
    run_benchmark(build_plan(arguments), results_folder)
    print((results_folder / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

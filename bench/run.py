"""What one benchmark run measures, in which order, and the results it collects."""

import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
from sklearn.metrics import adjusted_rand_score

from bench.clustering import base_customers, customers_table
from bench.flow import FlowTiming, flow_environment, running_prefect_server, time_flow
from bench.inputs import BenchInput
from bench.measure import WorkRun, run_work
from bench.report import markdown_report
from tasks.cluster import FIT_SAMPLE

ENGINES = ("project", "project-streaming", "duckdb", "pandas")
PROJECT_ENGINES = ENGINES[:2]
AGREEMENT_COLUMNS = ("Recency", "FrequencyPurchase", "NumUniqueItems", "Amount", "AvgOrderValue")
AGREEMENT_TOLERANCE = 1e-6  # relative, and absolute in pounds: a product returned in full nets to 0 or to ~1e-10
LARGE_LINES = 20_000_000  # inputs this large run once per engine: each run takes minutes
STREAMING_RUN = ("run", "--streaming", "true")
PARTITIONED_RUN = ("run-partitioned", "--dask-workers", "2")
VERSIONED_PACKAGES = ("polars", "duckdb", "pandas", "scikit-learn", "prefect", "numpy")


@dataclass(frozen=True)
class Plan:
    """Inputs and sizes of one run; `python -m bench` builds it from its flags."""

    line_inputs: tuple[BenchInput, ...]
    repeats: int = 3
    customer_base: Path | None = None    # generated export whose customers feed the clustering runs
    customer_counts: tuple[int, ...] = ()
    exact_counts: tuple[int, ...] = ()   # also clustered on every customer, to measure the sample's cost
    flow_input: BenchInput | None = None  # whole flow, with a temporary and with a running Prefect server
    large_flow_inputs: tuple[BenchInput, ...] = ()  # whole flow once each, streamed, against the running server
    partitioned_input: BenchInput | None = None  # a folder of monthly files: the partitioned flow, once
    memory_cap_mb: float = 12_000
    engines: tuple[str, ...] = field(default_factory=lambda: tuple(
        engine for engine in ENGINES if engine != "pandas" or importlib.util.find_spec("pandas")))


def run_benchmark(plan: Plan, output: Path) -> dict:
    """Run every part of the plan, saving latest.json and latest.md in `output` after each part."""
    results = {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "repeats": plan.repeats, "memory_cap_mb": plan.memory_cap_mb,
               "missing_engines": [engine for engine in ENGINES if engine not in plan.engines]}
    # Cheapest first, the exact clustering (the long pole) last: each part's results are saved as it ends.
    parts: dict[str, Callable[[Plan, Path], list[dict]]] = {
        "pipelines": bench_pipelines, "flow": bench_flow, "clustering": bench_clustering,
        "exact_clustering": bench_exact_clustering}
    with TemporaryDirectory(prefix="bench-") as scratch:
        for name, part in parts.items():
            results[name] = part(plan, Path(scratch))
            results["load_average_after"] = os.getloadavg()
            save(results, output)
    return results


def save(results: dict, output: Path) -> None:
    """latest.json and the markdown tables of latest.md."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (output / "latest.md").write_text(markdown_report(results))


def machine() -> dict:
    """What the numbers were measured on, and how busy it was when the run started."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal")))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_kb / 1024**2, 1),
            "python": platform.python_version(), "packages": {name: _version(name) for name in VERSIONED_PACKAGES},
            "load_average_before": os.getloadavg()}


def _version(package: str) -> str | None:
    """Installed version of a package, None if it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_pipelines(plan: Plan, scratch: Path) -> list[dict]:
    """ingest -> clean -> features per input and engine; repeats interleave engines so load drifts hit all alike."""
    rows = []
    for bench_input in plan.line_inputs:
        runs: dict[str, list[WorkRun]] = {engine: [] for engine in plan.engines}
        for repeat in range(plan.repeats if bench_input.lines < LARGE_LINES else 1):
            for engine in plan.engines:
                if runs[engine] and runs[engine][-1].failure:
                    continue  # a run that failed or blew the memory cap would only do it again
                save_to = features_path(scratch, bench_input, engine) if repeat == 0 else None
                runs[engine].append(run_work(engine, plan.memory_cap_mb, save_to, path=str(bench_input.path)))
        rows += [pipeline_row(bench_input, engine, engine_runs, scratch) for engine, engine_runs in runs.items()]
    return rows


def features_path(scratch: Path, bench_input: BenchInput, engine: str) -> Path:
    """Where an engine's features of one input are kept for the agreement check."""
    return scratch / f"{bench_input.name} {engine}.parquet"


def pipeline_row(bench_input: BenchInput, engine: str, runs: list[WorkRun], scratch: Path) -> dict:
    """Median wall and CPU time, peak RSS, lines/s and agreement with the project of one engine on one input."""
    timed = [run for run in runs if run.failure is None]
    wall = statistics.median(run.wall_seconds for run in timed) if timed else None
    # The in-memory project refuses inputs beyond its memory limit; the streamed one is then the reference.
    reference = next((path for path in (features_path(scratch, bench_input, name) for name in PROJECT_ENGINES)
                      if path.is_file()), features_path(scratch, bench_input, "project"))
    ours = features_path(scratch, bench_input, engine)
    return {
        "input": bench_input.name, "lines": bench_input.lines, "engine": engine, "runs": len(timed),
        "wall_seconds": wall, "cpu_seconds": statistics.median(run.cpu_seconds for run in timed) if timed else None,
        "peak_rss_mb": max(run.peak_rss_mb for run in runs), "lines_per_second": bench_input.lines / wall if wall else None,
        "customers": timed[0].result["customers"] if timed else None,
        "agrees_with_project": same_features(pl.read_parquet(reference), pl.read_parquet(ours))
        if timed and reference.is_file() else None,
        "walls": [run.wall_seconds for run in timed], "failure": next((run.failure for run in runs if run.failure), None),
    }


def same_features(reference: pl.DataFrame, other: pl.DataFrame) -> bool:
    """Same customers with the same counts and, within rounding, the same money."""
    if reference["CustomerID"].to_list() != other["CustomerID"].to_list():
        return False
    both = reference.select("CustomerID", *AGREEMENT_COLUMNS).join(other, on="CustomerID", suffix="_other")
    return all(both.select((pl.col(column).cast(pl.Float64).is_close(pl.col(f"{column}_other").cast(pl.Float64),
                                                                   rel_tol=AGREEMENT_TOLERANCE,
                                                                   abs_tol=AGREEMENT_TOLERANCE)).all()).item()
               for column in AGREEMENT_COLUMNS)


def bench_clustering(plan: Plan, scratch: Path) -> list[dict]:
    """The clustering stage per customer count, as configured by default (fitted on a sample above its size)."""
    if plan.customer_base is None:
        return []
    base = base_customers(plan.customer_base)
    return [clustering_row(customers_table(base, customers), customers, FIT_SAMPLE, scratch, plan)
            for customers in plan.customer_counts]


def bench_exact_clustering(plan: Plan, scratch: Path) -> list[dict]:
    """The clustering stage fitted on every customer, and how well the default fit agrees with it (ARI)."""
    if plan.customer_base is None:
        return []
    base = base_customers(plan.customer_base)
    rows = []
    for customers in plan.exact_counts:
        row = clustering_row(customers_table(base, customers), customers, None, scratch, plan)
        default_fit, exact_fit = (labels_path(scratch, customers, fit) for fit in (FIT_SAMPLE, None))
        if row["failure"] is None and default_fit.is_file():
            row.update(labels_agreement(default_fit, exact_fit))
        rows.append(row)
    return rows


def labels_path(scratch: Path, customers: int, fit_sample: int | None) -> Path:
    """Where the labels of one clustering run are kept for the agreement."""
    return scratch / f"labels-{customers}-{fit_sample or 'exact'}.parquet"


def clustering_row(table: Path, customers: int, fit_sample: int | None, scratch: Path, plan: Plan) -> dict:
    """One clustering run: time, memory and the metrics of its segmentation."""
    run = run_work("cluster", plan.memory_cap_mb, labels_path(scratch, customers, fit_sample),
                   path=str(table), fit_sample=fit_sample)
    return {"customers": customers, "fit_sample": fit_sample, "wall_seconds": run.wall_seconds,
            "cpu_seconds": run.cpu_seconds, "peak_rss_mb": run.peak_rss_mb, "failure": run.failure, **run.result}


def labels_agreement(default_fit: Path, exact_fit: Path) -> dict:
    """Adjusted Rand index of the default fit's clusters and segments against the exact fit's."""
    both = pl.read_parquet(default_fit).join(pl.read_parquet(exact_fit), on="CustomerID", suffix="_exact")
    return {f"ari_{level}_vs_exact": float(adjusted_rand_score(both[f"{level}_exact"], both[level]))
            for level in ("cluster", "segment")}


def bench_flow(plan: Plan, scratch: Path) -> list[dict]:
    """`segments run` on the flow input with a temporary and a running server, then the large inputs once."""
    if plan.flow_input is None:
        return []
    home = scratch / "prefect-home"  # a fresh Prefect database, so other work on the machine is not touched
    # The first run against a fresh home creates Prefect's database: a warm-up, not counted.
    rows = [flow_row(plan.flow_input, "temporary server", flow_environment(home, None), plan, warm_up=True)]
    with running_prefect_server(home) as (api_url, server_seconds):
        env = flow_environment(home, api_url)
        rows.append({**flow_row(plan.flow_input, "running server", env, plan, warm_up=True),
                     "server_ready_seconds": server_seconds})
        once = replace(plan, repeats=1)
        rows += [flow_row(large, "running server, streaming", env, once, command=STREAMING_RUN)
                 for large in plan.large_flow_inputs]
        if plan.partitioned_input is not None:
            rows.append(flow_row(plan.partitioned_input, "running server, partitioned on Dask", env, once,
                                 command=PARTITIONED_RUN))
    return rows


def flow_row(bench_input: BenchInput, mode: str, env: dict[str, str], plan: Plan, warm_up: bool = False,
             command: tuple[str, ...] = ("run",)) -> dict:
    """Median split of `plan.repeats` whole-flow runs, or why the run failed."""
    row = {"input": bench_input.name, "lines": bench_input.lines, "mode": mode}
    try:
        if warm_up:
            time_flow(bench_input.path, env, plan.memory_cap_mb, command)
        timings = [time_flow(bench_input.path, env, plan.memory_cap_mb, command) for _ in range(plan.repeats)]
    except (MemoryError, RuntimeError, ValueError) as error:
        return {**row, "runs": 0, "failure": str(error).splitlines()[0]}
    return {**row, "runs": len(timings), "failure": None, **median_timing(timings)}


def median_timing(timings: list[FlowTiming]) -> dict:
    """Each part of the split as its median over the runs (so the parts need not add up exactly)."""
    parts = {key: statistics.median(getattr(timing, key) for timing in timings) if value is not None else None
             for key, value in asdict(timings[0]).items() if key != "stages"}
    stages = {stage: statistics.median(timing.stages.get(stage, 0.0) for timing in timings) for stage in timings[0].stages}
    return {**parts, "stages": stages, "stages_seconds": sum(stages.values())}

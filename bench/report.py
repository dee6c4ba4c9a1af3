"""The results as markdown tables, ready to paste into the README."""

STAGES = ("ingest", "clean", "features", "cluster", "report", "publish")
PROJECT_ENGINES = ("project", "project-streaming")


def markdown_report(results: dict) -> str:
    """Machine, then one table per part of the benchmark that has results."""
    sections = [machine_section(results)]
    if results.get("pipelines"):
        sections += [pipeline_table(results["pipelines"]), ratio_table(results["pipelines"])]
    if results.get("clustering"):
        sections.append(clustering_table(results["clustering"] + results.get("exact_clustering", [])))
    if results.get("flow"):
        sections.append(flow_table(results["flow"]))
    return "\n\n".join(sections) + "\n"


def machine_section(results: dict) -> str:
    """One paragraph: hardware, versions, how busy the machine was, how medians were taken."""
    machine = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["packages"].items() if version)
    before = ", ".join(f"{load:.1f}" for load in machine["load_average_before"])
    after = ", ".join(f"{load:.1f}" for load in results.get("load_average_after", ()))
    missing = results.get("missing_engines")
    return (
        f"Measured {results['started']} on {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"Python {machine['python']}, {versions}. Load average (1, 5, 15 min) {before} before, {after} after. "
        f"Times are medians of {results['repeats']} runs (50M lines, clustering and large flows: one run), each in a fresh "
        f"process; CPU is user + system of all threads; runs were killed past {results['memory_cap_mb']:,.0f} MB RSS."
        + (f" Not measured: {', '.join(missing)} (not installed)." if missing else "")
    )


def _number(value: float | None, digits: int = 2) -> str:
    """A number with thousands separators, or a dash for no value."""
    return "–" if value is None else f"{value:,.{digits}f}"


def pipeline_table(rows: list[dict]) -> str:
    """ingest -> clean -> features per input and engine."""
    lines = ["| input | lines | engine | wall s | CPU s | peak RSS MB | lines/s | same features as project |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for row in rows:
        agrees = {True: "yes", False: "NO", None: "–"}[row["agrees_with_project"]]
        lines.append(
            f"| {row['input']} | {row['lines']:,} | {row['engine']} | {_number(row['wall_seconds'])} "
            f"| {_number(row['cpu_seconds'])} | {_number(row['peak_rss_mb'], 0)} | {_number(row['lines_per_second'], 0)} "
            f"| {row['failure'] or agrees} |")
    return "**ingest → clean → features**\n\n" + "\n".join(lines)


def ratio_table(rows: list[dict]) -> str:
    """Wall-time ratios per input, the project in its faster mode: ÷ DuckDB (target <= 1), pandas ÷ it (target >= 5)."""
    walls: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["wall_seconds"]:
            walls.setdefault(row["input"], {})[row["engine"]] = row["wall_seconds"]
    lines = ["| input | project mode | project ÷ DuckDB (target ≤ 1) | pandas ÷ project (target ≥ 5) |",
             "|---|---|---:|---:|"]
    for name, wall in walls.items():
        mode = min((engine for engine in PROJECT_ENGINES if engine in wall), key=wall.__getitem__, default=None)
        project = wall.get(mode)
        lines.append(f"| {name} | {mode or '–'} | {_ratio(project, wall.get('duckdb'))} "
                     f"| {_ratio(wall.get('pandas'), project)} |")
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> str:
    """numerator / denominator to two decimals, or a dash when either is missing."""
    return _number(numerator / denominator) if numerator and denominator else "–"


def clustering_table(rows: list[dict]) -> str:
    """The clustering stage per customer count and fit."""
    lines = ["| customers | fitted on | wall s | CPU s | peak RSS MB | segments | outliers | stability "
             "| ARI of the default fit vs this one: clusters / segments |", "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        fitted = "every customer" if row["fit_sample"] is None else f"sample of {row['fit_sample']:,}"
        if row["fit_sample"] is not None and row["customers"] <= row["fit_sample"]:
            fitted = "every customer (under the sample size)"
        ari = (f"{row['ari_cluster_vs_exact']:.3f} / {row['ari_segment_vs_exact']:.3f}"
               if "ari_segment_vs_exact" in row else "–")
        if row["failure"]:
            lines.append(f"| {row['customers']:,} | {fitted} | – | – | {_number(row['peak_rss_mb'], 0)} "
                         f"| {row['failure']} | | | |")
            continue
        lines.append(
            f"| {row['customers']:,} | {fitted} | {_number(row['wall_seconds'])} | {_number(row['cpu_seconds'])} "
            f"| {_number(row['peak_rss_mb'], 0)} | {row['segments']} | {row['outlier_share']:.1%} "
            f"| {_number(row['stability'], 3)} | {ari} |")
    return "**clustering stage**\n\n" + "\n".join(lines)


def flow_table(rows: list[dict]) -> str:
    """`segments run` wall time split into start-up, stages, Prefect's per-task overhead and shutdown.

    A partitioned run's file and partition tasks overlap on the Dask workers, so its time is not split.
    """
    lines = ["| input | Prefect API | wall s | CPU s | peak RSS MB | Dask worker peak RSS MB "
             "| start-up (of which waiting for the temporary server) | stages | " + " | ".join(STAGES)
             + " | Prefect per-task overhead | shutdown |",
             "|---|---|" + "---:|" * (8 + len(STAGES))]
    for row in rows:
        if row["failure"]:
            lines.append(f"| {row['input']} | {row['mode']} | {row['failure']} |" + " |" * (7 + len(STAGES)))
            continue
        measured = (f"| {row['input']} | {row['mode']} | {_number(row['wall_seconds'])} | {_number(row['cpu_seconds'])} "
                    f"| {_number(row['peak_rss_mb'], 0)} | {_number(row.get('worker_peak_rss_mb'), 0)} "
                    f"| {_number(row['startup_seconds'])} ({_number(row['server_wait_seconds'])}) ")
        if row.get("worker_peak_rss_mb") is not None:
            lines.append(measured + "| tasks overlap on the workers |" + " |" * (2 + len(STAGES)))
            continue
        stages = " | ".join(_number(row["stages"].get(stage)) for stage in STAGES)
        lines.append(measured + f"| {_number(row['stages_seconds'])} | {stages} "
                                f"| {_number(row['task_overhead_seconds'])} | {_number(row['shutdown_seconds'])} |")
    return "**whole flow (`segments run`)**\n\n" + "\n".join(lines)

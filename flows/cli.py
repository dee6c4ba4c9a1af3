"""`segments`: run, assign, serve or trigger the segmentation flows, or generate demo data, from a terminal."""

import argparse
import atexit
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydantic import ValidationError

from flows.serve import StackError, api_for_run
from tasks.errors import SegmentsError

if TYPE_CHECKING:
    from flows.parameters import RunParameters

FLOW_COMMANDS = ("run", "assign", "run-partitioned")


def console_script() -> NoReturn:
    """The `segments` command: main(), then Python's exit without its final teardown.

    After the exit handlers, Python frees every module and object one by one: with Prefect,
    scikit-learn, pandera and matplotlib loaded that takes about 2 s here, after the work is done.
    This runs the two steps of the exit that matter, in Python's order (waiting for threads and their
    exit hooks, then the atexit handlers), flushes the output and ends the process.
    """
    code = main()
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """What the `segments` command does with `argv` (default: its own arguments); returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in FLOW_COMMANDS and not {"-h", "--help"} & set(argv):
            # Before the parser imports the flows' parameters, and with them most of the project's
            # libraries: a temporary Prefect server, if the run needs one, boots meanwhile.
            with api_for_run() as api_ready:
                return run_flow(build_parser().parse_args(argv), api_ready)
        arguments = build_parser().parse_args(argv)
        return arguments.handler(arguments)
    except (SegmentsError, ValidationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StackError as error:  # the temporary Prefect server's failure, not the parameters': 1, as `segments serve`
        print(f"error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from flows.parameters import AssignmentParameters, PartitionedParameters, SegmentationParameters
    from flows.trigger import parse_override

    parser = argparse.ArgumentParser(prog="segments", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the customer-segmentation flow and publish its artifacts")
    add_parameter_flags(run, SegmentationParameters)
    run.set_defaults(parameters=SegmentationParameters, flow="flows.segmentation:customer_segmentation")

    assign = commands.add_parser("assign", help="label the customers of a new export with a published model")
    add_parameter_flags(assign, AssignmentParameters)
    assign.set_defaults(parameters=AssignmentParameters, flow="flows.assign:assign_segments")

    partitioned = commands.add_parser("run-partitioned",
                                      help="run customer-segmentation-partitioned over many files on a Dask cluster")
    add_parameter_flags(partitioned, PartitionedParameters)
    partitioned.set_defaults(parameters=PartitionedParameters, flow="flows.partitioned:customer_segmentation_partitioned")

    generate = commands.add_parser("generate", help="write synthetic demo transactions and their planted archetypes")
    generate.add_argument("--output", type=Path, default=Path("demo-data"), help="directory to write into")
    generate.add_argument("--lines", type=int, default=200_000, help="approximate number of invoice lines")
    generate.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    generate.set_defaults(handler=generate_data)

    serve = commands.add_parser("serve", help="a local Prefect server, the deployments and a worker until Ctrl-C")
    serve.add_argument("--port", type=int, default=4200,
                       help="port of the local server (not started when PREFECT_API_URL is set)")
    serve.set_defaults(handler=serve_stack)

    trigger = commands.add_parser("trigger", help="start a run of the deployment customer-segmentation/one-off")
    trigger.add_argument("--param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         type=parse_override, help="set one field of the run's parameters; the value is read as "
                                                   "JSON when it is JSON, e.g. countries='[\"France\"]' (repeatable)")
    trigger.add_argument("--watch", action="store_true", help="wait for the run to end; exit 1 unless it completed")
    trigger.set_defaults(handler=trigger_run)
    return parser


def add_parameter_flags(parser: argparse.ArgumentParser, parameters: "type[RunParameters]") -> None:
    """One flag per field of the flow's parameters model; list and mapping fields take the flag repeatedly."""
    from flows.parameters import CLI_FLAGS

    for name, field in parameters.model_fields.items():
        flag = "--" + CLI_FLAGS.get(name, name.replace("_", "-"))
        repeated = name in CLI_FLAGS
        parser.add_argument(flag, dest=name, action="append" if repeated else "store",
                            type=column_pair if name == "column_mapping" else None,
                            help=field.description + (" (repeat the flag for several)" if repeated else ""))


def column_pair(text: str) -> tuple[str, str]:
    """`Source=Canonical` as (source column, canonical column); canonical names have no '=', source names may."""
    source, separator, canonical = text.rpartition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected Source=Canonical, got {text!r}")
    return source, canonical


def parameters_from(arguments: argparse.Namespace) -> "RunParameters":
    """Validated flow parameters from the given flags; unset flags keep the model's defaults."""
    model = arguments.parameters
    given = {name: value for name, value in vars(arguments).items() if name in model.model_fields and value is not None}
    if "column_mapping" in given:
        given["column_mapping"] = dict(given["column_mapping"])
    return model(**given)


def run_flow(arguments: argparse.Namespace, api_ready: Callable[[], None]) -> int:
    """Run the command's flow once the Prefect API answers; print its summary."""
    params = parameters_from(arguments)
    module, name = arguments.flow.split(":")
    flow = getattr(importlib.import_module(module), name)  # only the chosen flow's modules: Dask's take seconds
    hide_tracebacks_of_own_errors()
    api_ready()
    # What is alive now, the imported libraries above all, lives as long as the run: frozen, the
    # collector's full passes skip it. Thawed after the run, as tests call main() in their own process.
    gc.freeze()
    try:
        state = flow(params, return_state=True)
    finally:
        gc.unfreeze()
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
        f"  segments file     {summary.segments_url}\n"
        + (f"  report            {summary.report_url}\n" if summary.report_url else "")
        + f"  manifest          {summary.manifest_url}"
    )
    return 0


class _OwnErrorsWithoutTraceback(logging.Filter):
    """Our errors already say what is wrong and what to do; a stack trace would only bury that."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SegmentsError):
            record.exc_info, record.exc_text = None, None
        return True


# One instance: a handler adds a filter it holds already only once, and tests call main() again and again.
_OWN_ERRORS_WITHOUT_TRACEBACK = _OwnErrorsWithoutTraceback()


def hide_tracebacks_of_own_errors() -> None:
    """Keep Prefect's console log free of stack traces for the project's own errors."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_OWN_ERRORS_WITHOUT_TRACEBACK)


def generate_data(arguments: argparse.Namespace) -> int:
    from tasks.generate import write_generated

    transactions, archetypes = write_generated(arguments.output, arguments.lines, seed=arguments.seed)
    print(f"Wrote {transactions} and {archetypes}.")
    return 0


def serve_stack(arguments: argparse.Namespace) -> int:
    from flows.serve import serve

    return serve(arguments.port)


def trigger_run(arguments: argparse.Namespace) -> int:
    from flows.trigger import trigger

    return trigger(dict(arguments.overrides), watch=arguments.watch)


if __name__ == "__main__":
    console_script()

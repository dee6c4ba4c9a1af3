"""Prefect servers on this machine: `segments serve`'s whole stack, and `segments run`'s temporary server.

`segments serve` starts a Prefect server with its SQLite database (unless an API is already
configured), creates the `segments` process work pool, deploys everything in prefect.yaml and runs
a worker until Ctrl-C or SIGTERM, which stop the worker first, then the server.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

PROJECT_DIR = Path(__file__).resolve().parents[1]
# This environment's own `prefect`: its worker starts flow runs with the same interpreter and packages.
PREFECT = str(Path(sys.executable).with_name("prefect"))
WORK_POOL = "segments"
READY_MESSAGE = "Prefect UI:"
STARTUP_TIMEOUT_SECONDS = 180.0
STOP_GRACE_SECONDS = 10.0
# A busy worker may let the first interrupt pass; the second one stops it.
WORKER_STOP_SIGNALS = (signal.SIGINT, signal.SIGINT)
SERVER_STOP_SIGNALS = (signal.SIGTERM,)
# On Linux, a child's command runs through this: it makes SIGTERM the child's parent-death signal
# (PR_SET_PDEATHSIG, which the exec into the command keeps) and gives back the default actions of
# the signals Python takes over at start-up, as a plain exec from Popen would have them.
_STOPPED_WITH_PARENT = """
import ctypes, os, signal, sys
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
for restored in (signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(restored, signal.SIG_DFL)
PR_SET_PDEATHSIG = 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM)) != 0:
    print("warning: it would outlive a parent killed outright:", os.strerror(ctypes.get_errno()), file=sys.stderr)
if os.getppid() != int(sys.argv[1]):
    sys.exit("its parent is gone")
os.execvp(sys.argv[2], sys.argv[2:])
"""


class StackError(RuntimeError):
    """A part of the stack failed to start or stopped by itself."""


def serve(port: int) -> int:
    """Bring the stack up, keep it running until interrupted, and stop everything it started; returns the exit code."""
    from prefect.settings import get_current_settings

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    settings = get_current_settings()
    environment = stack_environment()
    try:
        with ExitStack() as started:
            processes: dict[str, subprocess.Popen] = {}
            if settings.api.url:
                api_url, ui_url = settings.api.url, settings.ui_url
            else:
                api_url, ui_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
                environment["PREFECT_API_URL"] = api_url  # the server's UI and every later process talk to it
                processes["server"] = started.enter_context(
                    running(server_command(port), environment, SERVER_STOP_SIGNALS, own_process_group=True))
                wait_until_healthy(api_url, processes["server"])
            ensure_work_pool(api_url)
            worker_command = [PREFECT, "worker", "start", "--pool", WORK_POOL]
            processes["worker"] = started.enter_context(
                running(worker_command, environment, WORKER_STOP_SIGNALS, own_process_group=True))
            deploy(environment)
            print(f"\n{READY_MESSAGE} {ui_url}\n"
                  f"Start runs there (Deployments -> one-off -> Run) or, in another terminal, with\n"
                  f"  PREFECT_API_URL={api_url} segments trigger --watch\n"
                  f"Ctrl-C stops the worker{' and the server' if 'server' in processes else ''}.", flush=True)
            supervise(processes)
    except KeyboardInterrupt:
        print("Stopped everything `segments serve` started.", flush=True)
        return 0
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def stack_environment() -> dict[str, str]:
    """This process's environment plus what the stack's own processes need."""
    return {
        **os.environ,
        # `prefect deploy` resolves the pull step's `{{ $SEGMENTS_PROJECT_DIR }}` to this checkout.
        "SEGMENTS_PROJECT_DIR": str(PROJECT_DIR),
        "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    }


@contextmanager
def api_for_run() -> Iterator[Callable[[], None]]:
    """The configured Prefect API or, without one, a temporary server for this run; yields a wait until it answers.

    Without an API, Prefect would start a temporary server itself at the first API call: after every
    import, and after importing its own server modules into this process (4-5 s here). This one is
    launched first, so that it boots on the other core while the flows are imported, and it is
    stopped when the run is done. Only Prefect can tell whether a profile names an API, and importing
    it takes seconds: unless Prefect is imported already, the server is launched before asking, and
    stopped again if one does.
    """
    with ExitStack() as started:
        server = None
        if "PREFECT_API_URL" not in os.environ and "prefect" not in sys.modules:
            server = started.enter_context(temporary_server())
        from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

        if get_current_settings().api.url:
            started.close()  # the configured API it is
            api_ready = lambda: None  # noqa: E731
        else:
            server = server or started.enter_context(temporary_server())
            started.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
            api_ready = server.wait_until_healthy
        started.callback(send_pending_logs_and_events)
        yield api_ready


def send_pending_logs_and_events() -> None:
    """Wait until Prefect has sent the logs and events still queued in this process.

    Prefect does this as the interpreter shuts down; done here, a temporary server is still there to
    receive them, and the `segments` command can exit without that shutdown (see console_script).
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


class TemporaryServer:
    """A Prefect server process on a free loopback port, its output in a temporary file."""

    def __init__(self, process: subprocess.Popen, port: int, output: IO[bytes]) -> None:
        self.process, self.api_url, self._output = process, f"http://127.0.0.1:{port}/api", output
        self._launched = time.monotonic()

    def wait_until_healthy(self) -> None:
        """Block until the API answers; log how long that took (the bench reads it), or fail with its output."""
        from prefect.logging import get_logger

        waited_from = time.monotonic()
        try:
            wait_until_healthy(self.api_url, self.process, where_output_is="below")
        except StackError as error:
            self._output.seek(0)
            raise StackError(f"{error}\n{self._output.read().decode(errors='replace')[-4000:]}") from None
        get_logger("segments").info(
            "Temporary Prefect server ready at %s after %.2f s, %.2f s of them waited for it",
            self.api_url, time.monotonic() - self._launched, time.monotonic() - waited_from)


@contextmanager
def temporary_server(environment: dict[str, str] | None = None) -> Iterator[TemporaryServer]:
    """A Prefect server for one run on a free port (with this environment, or else ours), stopped on exit.

    Like the one Prefect itself would start: no UI, and no scheduler or late-run marking, which would
    otherwise act on whatever deployments the database holds. It stays in this process's group, so
    whatever stops this process's group stops it too.
    """
    port = free_port()
    command = server_command(port, "--no-ui", "--analytics-off", "--no-scheduler", "--no-late-runs")
    with tempfile.TemporaryFile(prefix="segments-prefect-server-") as output, \
            running(command, dict(os.environ) if environment is None else environment, SERVER_STOP_SIGNALS,
                    own_process_group=False, output=output) as process:
        yield TemporaryServer(process, port, output)


def server_command(port: int, *options: str) -> list[str]:
    """`prefect server start` on the loopback interface."""
    return [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), *options]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(
    command: Sequence[str], environment: dict[str, str], stop_signals: Sequence[int], own_process_group: bool,
    output: IO[bytes] | None = None,
) -> Iterator[subprocess.Popen]:
    """A child process that is always stopped on exit with the given signals, then killed if it outlives them.

    In its own process group, Ctrl-C reaches only this process, which then stops its children in
    order (as `segments serve` does). Its output goes to `output`, or else to this process's own.
    On Linux it also gets SIGTERM if the thread that entered this ends without stopping it (SIGKILL, the
    OOM killer): enter it from a thread that outlives the child, such as the main one.
    """
    process = subprocess.Popen(stopped_with_parent(command), env=environment, cwd=PROJECT_DIR,
                               stdin=subprocess.DEVNULL, process_group=0 if own_process_group else None,
                               stdout=output, stderr=output)
    try:
        yield process
    finally:
        stop(process, stop_signals)


def stopped_with_parent(command: Sequence[str]) -> list[str]:
    """The command, wrapped so that once started the kernel sends it SIGTERM when the thread that started it ends.

    Linux only; elsewhere the command as it is. The wrapper runs isolated (-I -S): no site packages,
    nothing from the working folder on its path, and 30-40 ms of start-up here.
    """
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-I", "-S", "-c", _STOPPED_WITH_PARENT, str(os.getpid()), *command]


def stop(process: subprocess.Popen, stop_signals: Sequence[int]) -> None:
    """Send each signal in turn, waiting a grace period after each, and kill the process if it is still there."""
    try:
        for stop_signal in stop_signals:
            if process.poll() is not None:
                return
            process.send_signal(stop_signal)
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                continue
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_until_healthy(api_url: str, server: subprocess.Popen, where_output_is: str = "above") -> None:
    """Poll the API's health endpoint until it answers; fail early if the server process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StackError(f"the Prefect server exited with code {server.returncode} (its output is {where_output_is})")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise StackError(f"the Prefect server did not answer on {api_url} within {STARTUP_TIMEOUT_SECONDS:.0f} s")


def ensure_work_pool(api_url: str) -> None:
    """Create the process work pool that prefect.yaml names, unless the server has it already."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    pool = WorkPoolCreate(name=WORK_POOL, type=ProcessWorker.type,
                          base_job_template=ProcessWorker.get_default_base_job_template())
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(pool)
        except ObjectAlreadyExists:
            pass
        except httpx.TransportError as error:
            raise StackError(f"cannot reach the Prefect API at {api_url}: {error}") from None


def deploy(environment: dict[str, str]) -> None:
    """Register every deployment in prefect.yaml."""
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], env=environment, cwd=PROJECT_DIR,
                              stdin=subprocess.DEVNULL)
    if deployed.returncode != 0:
        raise StackError(f"`prefect deploy --all` failed with code {deployed.returncode} (its output is above)")


def supervise(processes: dict[str, subprocess.Popen]) -> None:
    """Block until interrupted; raise StackError as soon as a part of the stack stops by itself."""
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                raise StackError(f"the {name} exited with code {process.returncode}; stopping the rest")
        time.sleep(1)


def _interrupt(signum: int, frame: object) -> None:
    """Unwind on Ctrl-C or SIGTERM, even when started with SIGINT ignored (as shells start background jobs)."""
    raise KeyboardInterrupt

"""One Prefect stack for the deployment and UI tests, started the way a user starts it: `segments serve`.

It runs on a free loopback port with its own PREFECT_HOME (so its SQLite database and settings are
the test's), next to a moto S3 server whose bucket the runs publish to; the worker gets the
bucket's endpoint and dummy credentials through its environment. Test modules load it with

    pytest_plugins = ["tests.prefect_stack"]

and ask for the session fixture `prefect_stack`, which carries everything they need from here.
At the end the stack is interrupted like Ctrl-C, and the fixture fails if `segments serve` did
not exit cleanly or left any process behind.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient

from flows.serve import PROJECT_DIR, READY_MESSAGE, free_port
from tests.s3_server import (
    TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY, moto_s3_server, s3_test_client,
)

BIN = Path(sys.executable).parent
BUCKET = "segments-e2e"
READY_TIMEOUT_SECONDS = 300
STOP_TIMEOUT_SECONDS = 90
COMMAND_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class PrefectStack:
    """Where the running stack and its S3 bucket answer, and how to talk to them."""

    api_url: str
    ui_url: str
    bucket: str
    s3_endpoint: str
    environment: dict[str, str]  # PREFECT_API_URL and PREFECT_HOME of the stack, the bucket's AWS settings

    def run(self, command: str, *arguments: str) -> subprocess.CompletedProcess:
        """One of the project's console scripts (`segments`, `prefect`) against the stack, as a user types it."""
        return subprocess.run([str(BIN / command), *arguments], env=self.environment, cwd=PROJECT_DIR,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)

    def client(self) -> SyncPrefectClient:
        """A Prefect API client for the stack; use it as a context manager."""
        return SyncPrefectClient(self.api_url)

    def s3(self):
        """A boto3 client for the stack's bucket."""
        return s3_test_client(self.s3_endpoint)


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    home = tmp_path_factory.mktemp("prefect-home")
    with moto_s3_server() as s3_endpoint:
        s3_test_client(s3_endpoint).create_bucket(Bucket=BUCKET)
        environment = isolated_environment(home, s3_endpoint)
        port = free_port()
        with serving(environment, port, home / "serve.log"):
            api_url = f"http://127.0.0.1:{port}/api"
            yield PrefectStack(api_url=api_url, ui_url=f"http://127.0.0.1:{port}", bucket=BUCKET,
                               s3_endpoint=s3_endpoint, environment=environment | {"PREFECT_API_URL": api_url})


def isolated_environment(home: Path, s3_endpoint: str) -> dict[str, str]:
    """This environment without Prefect or AWS settings, plus the stack's own home and the test bucket's access."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "AWS_"))}
    return inherited | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # the worker picks runs up within 2 s instead of 10
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": TEST_REGION,
    }


@contextmanager
def serving(environment: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    """`segments serve` until it says it is ready; on exit interrupted like Ctrl-C, then checked to leave nothing."""
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([str(BIN / "segments"), "serve", "--port", str(port)], env=environment,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_ready(serve, log_path)
            yield
        finally:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            survivors = kill_processes_of(environment["PREFECT_HOME"])
    assert serve.returncode == 0 and not survivors, (
        f"`segments serve` exited with {serve.returncode} and left {survivors}:\n{tail(log_path)}")


def wait_until_ready(serve: subprocess.Popen, log_path: Path) -> None:
    """Block until `segments serve` prints its ready message; fail with its output if it exits or never gets there."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while READY_MESSAGE not in log_path.read_text(errors="replace"):
        if serve.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"`segments serve` did not get ready (exit code {serve.poll()}):\n{tail(log_path)}")
        time.sleep(0.5)


def kill_processes_of(prefect_home: str) -> list[str]:
    """Kill every process whose environment carries this PREFECT_HOME, i.e. all the stack started; their commands."""
    marker = f"PREFECT_HOME={prefect_home}".encode()
    killed = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (process / "environ").read_bytes().split(b"\0"):
                command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                os.kill(int(process.name), signal.SIGKILL)
                killed.append(command)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return killed


def tail(log_path: Path, limit: int = 4000) -> str:
    """The end of a log, for failure messages."""
    return log_path.read_text(errors="replace")[-limit:]

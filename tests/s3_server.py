"""A real moto S3 server in a subprocess, for tests that talk to S3 over HTTP.

    with moto_s3_server() as endpoint_url:
        client = s3_test_client(endpoint_url)
        client.create_bucket(Bucket="artifacts")

The server accepts any credentials unless started with `enforce_auth=True`; then every
request is checked against moto's (empty) IAM and refused with HTTP 403 (InvalidAccessKeyId).
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import boto3
from botocore.config import Config

from flows.parameters import RunParameters
from flows.serve import free_port

TEST_ACCESS_KEY_ID = "testing"
TEST_SECRET_ACCESS_KEY = "testing"
TEST_REGION = "us-east-1"

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
_STOP_TIMEOUT_SECONDS = 5


@contextmanager
def moto_s3_server(*, enforce_auth: bool = False, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run `moto_server` on a free port, yield its endpoint URL once it answers, and always stop it."""
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if enforce_auth else {})}
    # A file rather than a pipe: nobody reads the server's request log, and a full pipe would block it.
    with tempfile.TemporaryFile() as server_log:
        server = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=server_log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            _wait_until_answering(server, endpoint_url, startup_timeout, server_log)
            yield endpoint_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_answering(server: subprocess.Popen, endpoint_url: str, timeout: float, server_log: IO[bytes]) -> None:
    """Poll the endpoint until any HTTP response comes back; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {server.returncode}:\n{_tail(server_log)}")
        try:
            urllib.request.urlopen(endpoint_url, timeout=1).close()
            return
        except urllib.error.HTTPError as refusal:
            refusal.close()
            return  # an error status is still an answer (with enforce_auth the root is refused)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer on {endpoint_url} within {timeout:.0f} s:\n{_tail(server_log)}")


def _tail(server_log: IO[bytes], limit: int = 2000) -> str:
    """The end of the server's output, for error messages."""
    server_log.seek(0)
    return server_log.read().decode(errors="replace")[-limit:]


def use_test_credentials_only(monkeypatch) -> None:
    """The test key pair and region in the environment, and no endpoint: the S3 parameters must name the server."""
    for name, value in {"AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
                        "AWS_REGION": TEST_REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def use_no_credentials(monkeypatch) -> None:
    """No AWS credentials anywhere boto3 looks (variables, files, container and instance metadata), the test region."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", TEST_REGION)
    # boto3's default session keeps the credentials it found for an earlier test's client.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def assert_names_every_way_to_give_credentials(message: str) -> None:
    """The standard AWS variables and profile, and the runs' Secret block parameters as flags and as fields."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        assert variable in message
    for field in ("s3_access_key_id_block", "s3_secret_access_key_block"):
        assert field in RunParameters.model_fields
        assert f"--{field.replace('_', '-')}" in message and field in message


def s3_test_client(
    endpoint_url: str,
    *,
    access_key_id: str = TEST_ACCESS_KEY_ID,
    secret_access_key: str = TEST_SECRET_ACCESS_KEY,
    total_max_attempts: int = 1,
):
    """A boto3 S3 client for the test server with dummy credentials; no retries by default so failures are fast."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=TEST_REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(retries={"mode": "standard", "total_max_attempts": total_max_attempts}),
    )


def new_bucket(client) -> str:
    """A new bucket with a random name: tests that share a server each get their own."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket

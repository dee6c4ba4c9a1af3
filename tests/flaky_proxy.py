"""An HTTP/1.1 proxy on 127.0.0.1 that fails chosen requests, for tests of clients that must retry.

    with FlakyProxy(upstream_port, SeededFaults(seed=7, share=0.3)) as proxy:
        client = s3_test_client(proxy.endpoint_url)
        ...
    proxy.faults  # how often each fault was injected

Each client connection carries one request: the proxy reads it whole, asks its fault plan what to do,
answers and closes the connection (it tells both sides `Connection: close`). Request bodies must come with
a Content-Length, as botocore sends them over plain HTTP.
"""

import random
import socket
import threading
from collections import Counter
from collections.abc import Callable
from enum import Enum

_HEAD_END = b"\r\n\r\n"


class Fault(Enum):
    NONE = "forwarded"
    DROP_REQUEST = "closed without forwarding"  # the server never sees the request
    DROP_RESPONSE = "forwarded, then closed without answering"  # the server acted, the client cannot know
    INTERNAL_ERROR = "answered 500 InternalError"
    NO_SUCH_UPLOAD = "answered 404 NoSuchUpload"  # S3's answer to completing a multipart upload completed already


_ERROR_ANSWERS = {  # status line, S3 error code
    Fault.INTERNAL_ERROR: ("500 Internal Server Error", "InternalError"),
    Fault.NO_SUCH_UPLOAD: ("404 Not Found", "NoSuchUpload"),
}


FaultPlan = Callable[[str], Fault]  # request line, e.g. "PUT /bucket/key HTTP/1.1" -> what to do with it


class SeededFaults:
    """A share of requests fail, with a random but repeatable fault; never more than `max_in_a_row` in a row."""

    def __init__(self, seed: int, share: float, max_in_a_row: int = 2) -> None:
        self.random = random.Random(seed)
        self.share = share
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0

    def __call__(self, request_line: str) -> Fault:
        if self.in_a_row == self.max_in_a_row or self.random.random() >= self.share:
            self.in_a_row = 0
            return Fault.NONE
        self.in_a_row += 1
        return self.random.choice([Fault.INTERNAL_ERROR, Fault.DROP_REQUEST, Fault.DROP_RESPONSE])


class FlakyProxy:
    """Forwards HTTP requests to 127.0.0.1:`upstream_port`, failing those its fault plan picks."""

    def __init__(self, upstream_port: int, plan: FaultPlan) -> None:
        self.upstream_port = upstream_port
        self.plan = plan
        self.faults: Counter[Fault] = Counter()
        self.errors: list[BaseException] = []  # the proxy's own failures; a test should expect none
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FlakyProxy":
        self._start(self._accept_connections)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # shutdown() wakes the blocked accept(); close() alone would not on Linux.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_connections(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # the listener was shut down
                return
            self._start(self._serve_one_request, connection)

    def _serve_one_request(self, connection: socket.socket) -> None:
        with connection:
            try:
                request = _read_request(connection)
                if request is None:
                    return
                with self._lock:
                    fault = self.plan(request.split(b"\r\n", 1)[0].decode("latin-1"))
                    self.faults[fault] += 1
                self._act(fault, connection, _with_connection_close(request))
            except OSError:
                pass  # a peer closed its connection early; the client retries on a new one
            except Exception as error:  # reported to the test instead of dying with the thread
                self.errors.append(error)

    def _act(self, fault: Fault, connection: socket.socket, request: bytes) -> None:
        if fault in _ERROR_ANSWERS:
            connection.sendall(_error_answer(fault, with_body=not request.startswith(b"HEAD ")))
        elif fault is Fault.DROP_RESPONSE:
            self._forward(request)
        elif fault is Fault.NONE:
            connection.sendall(_with_connection_close(self._forward(request)))
        # Fault.DROP_REQUEST sends nothing: the connection closes unanswered.

    def _forward(self, request: bytes) -> bytes:
        """Send the request upstream and return the whole response, read until the server closes."""
        response = bytearray()
        with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            upstream.sendall(request)
            while _receive_into(upstream, response):
                pass
        return bytes(response)


def _read_request(connection: socket.socket) -> bytes | None:
    """One request, head and body; None if the client closed the connection first."""
    buffer = bytearray()
    while _HEAD_END not in buffer:
        if not _receive_into(connection, buffer):
            return None
    head, _, body_start = bytes(buffer).partition(_HEAD_END)
    headers = _headers(head)
    if "transfer-encoding" in headers:
        raise NotImplementedError(f"chunked request bodies are not supported: {head[:200]!r}")
    if headers.get("expect", "").lower() == "100-continue":
        connection.sendall(b"HTTP/1.1 100 Continue" + _HEAD_END)
    body = bytearray(body_start)
    while len(body) < int(headers.get("content-length", "0")):
        if not _receive_into(connection, body):
            return None
    return head + _HEAD_END + bytes(body)


def _receive_into(connection: socket.socket, buffer: bytearray) -> bool:
    """Append what the peer sent next to `buffer`; False if it closed the connection."""
    chunk = connection.recv(1 << 16)
    buffer += chunk
    return bool(chunk)


def _error_answer(fault: Fault, with_body: bool) -> bytes:
    """An S3 error response; HEAD answers carry no body."""
    status, code = _ERROR_ANSWERS[fault]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>Injected by the test proxy.</Message></Error>"
    ).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\nConnection: close"
    return head.encode() + _HEAD_END + (body if with_body else b"")


def _headers(head: bytes) -> dict[str, str]:
    """Header names (lower case) and values of a request head."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def _with_connection_close(message: bytes) -> bytes:
    """The request or response with `Connection: close` and without `Expect` (the proxy already answered it)."""
    head, separator, body = message.partition(_HEAD_END)
    first_line, *header_lines = head.split(b"\r\n")
    kept = [line for line in header_lines if line.split(b":", 1)[0].strip().lower() not in {b"connection", b"expect"}]
    return b"\r\n".join([first_line, *kept, b"Connection: close"]) + separator + body

"""How the stages' results are stored for reuse: pickle, with every Polars frame in them as compressed Arrow IPC.

Prefect keeps a persisted result as base64 text inside a JSON record. Pickled as they are, the
frames are stored uncompressed (Polars pickles its in-memory layout): the real data's ingest and
clean results came to about 100 MB of JSON each, and writing them took 3.6 s of every run. With
the frames as zstd-compressed Arrow IPC, each record is about 10 MB, written in 0.3 s, and Arrow
keeps every Polars type.
"""

import base64
import io
import pickle
from typing import Any, Literal

import polars as pl
from prefect.serializers import Serializer


class FramesAsArrowPickle(Serializer):
    """Standard pickle, except that Polars DataFrames go in as zstd-compressed Arrow IPC files."""

    type: Literal["pickle/arrow-frames"] = "pickle/arrow-frames"

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        _FramesAsArrowPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        # Prefect writes the bytes into a JSON record, which holds text only.
        return base64.b64encode(buffer.getvalue())

    def loads(self, blob: bytes) -> Any:
        return pickle.loads(base64.b64decode(blob))


class _FramesAsArrowPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, pl.DataFrame):
            return frame_from_arrow, (arrow_bytes(obj),)
        return NotImplemented


def arrow_bytes(frame: pl.DataFrame) -> bytes:
    """The frame as a zstd-compressed Arrow IPC file."""
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="zstd")
    return buffer.getvalue()


def frame_from_arrow(data: bytes) -> pl.DataFrame:
    """The frame `arrow_bytes` wrote."""
    return pl.read_ipc(io.BytesIO(data))

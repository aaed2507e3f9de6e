"""Length-prefixed msgpack records in a binary file: the offline tool's sorted spill runs and what its jobs
hand back to the parent (``stream.offline``, ``stream.offline_jobs``). Each record is a 4-byte little-endian
length and the msgpack bytes; the files are temporary, written and read by the same version."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Final, TypeVar

import msgspec

T = TypeVar("T")

#: A final session as the offline tool sorts and merges it: user key, start (ms), kind, its JSON line.
SessionRecord = tuple[str, int, str, bytes]
session_records: Final = msgspec.msgpack.Decoder(SessionRecord)

_encoder: Final = msgspec.msgpack.Encoder()


def write_records(out: BinaryIO, records: Iterable[object]) -> None:
    """Append ``records`` to ``out``, each framed by its length."""
    encode = _encoder.encode
    for record in records:
        data = encode(record)
        out.write(len(data).to_bytes(4, "little"))
        out.write(data)


def read_records(f: BinaryIO, decoder: msgspec.msgpack.Decoder[T]) -> Iterator[T]:
    """The records of ``f`` from its current position to its end."""
    decode = decoder.decode
    while head := f.read(4):
        yield decode(f.read(int.from_bytes(head, "little")))

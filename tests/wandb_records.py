"""Reading a W&B offline run back (tests only): its history rows and config, from the
`run-<id>.wandb` transaction log.

wandb 0.31 ships no Python reader for that file. Its format is LevelDB's log format behind a
7-byte header (":W&B", a 2-byte magic, a version byte): 32 KiB blocks of records, each with a
7-byte header (CRC-32C, little-endian length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) and a
piece of one serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FULL, LAST = 1, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def offline_run(path: Path) -> dict:
    """{"id", "history": [{key: value}], "config": {key: value}} of one offline run file."""
    out: dict = {"id": None, "history": [], "config": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"] = record.run.run_id
            out["config"].update(_items(record.run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}  # fmt: skip
            out["history"].append(row)
    return out


def _items(updates) -> dict:
    """Config entries by key; the run record wraps each value as {"value": ...}, config
    records do not: both come out plain."""
    out = {}
    for u in updates:
        value = json.loads(u.value_json)
        if isinstance(value, dict) and set(value) and set(value) <= {"value", "desc"}:
            value = value.get("value")
        out[u.key or "/".join(u.nested_key)] = value
    return out

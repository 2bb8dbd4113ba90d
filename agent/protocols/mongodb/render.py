"""Documents as the compact JSON Packetbeat shows (`{"me":"you"}`), and the reconstructed query.

Packetbeat marshals documents with Go's encoding/json: compact, integral
floats without a fraction (`1`, not `1.0`), ObjectIds as hex strings,
binary as base64.  Decision: keys keep their document order (Go sorts map
keys, an accident of its map type; MongoDB documents are ordered).
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from typing import Any

from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _datetime(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    text = value.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    text = text.replace("+00:00", "Z")
    return text.replace(".000Z", "Z")


def plain(value: Any) -> Any:
    """`value` with BSON types turned into JSON-friendly ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (int, Int64)):
        return int(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime.datetime):
        return _datetime(value)
    if isinstance(value, DatetimeMS):
        ms = int(value)
        try:
            return _datetime(_EPOCH + datetime.timedelta(milliseconds=ms))
        except OverflowError:
            return ms
    if isinstance(value, Timestamp):
        return (value.time << 32) | value.inc
    if isinstance(value, (Binary, bytes)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Regex):
        return {"$regex": str(value.pattern), "$options": value.flags if isinstance(value.flags, str) else ""}
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, Decimal128):
        return str(value)
    if isinstance(value, DBRef):
        return plain(value.as_doc())
    if isinstance(value, MinKey):
        return {"$minKey": 1}
    if isinstance(value, MaxKey):
        return {"$maxKey": 1}
    if hasattr(value, "pattern"):  # re.Pattern
        return {"$regex": value.pattern, "$options": ""}
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)


# Data left out of `query` (it stays in `request`), as Packetbeat does.
_HIDDEN = {"insert": "documents", "update": "updates", "findandmodify": "update"}


def reconstruct_query(resource: str, method: str, params: dict[str, Any] | None, skip: int | None,
                      limit: int | None, full: bool) -> str:
    """`db.col.method(params).skip(n).limit(n)`; without `full`, only write commands show their options."""
    text = f"{resource}.{method}("
    if params:
        if full:
            text += to_json(params)
        elif method in _HIDDEN:
            text += to_json({k: v for k, v in params.items() if k != _HIDDEN[method]})
    text += ")"
    if skip is not None and skip > 0:
        text += f".skip({skip})"
    if limit is not None and 0 < limit < 0x7FFFFFFF:
        text += f".limit({limit})"
    return text

"""Cursor pagination, newest first: the cursor is the (created_at, id) of the last item seen."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_

from service.problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, item_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(stamp), str(item_id)
    except (ValueError, TypeError) as exc:
        raise Problem(400, "invalid cursor: pass the next_cursor of a previous page") from exc


def paginate(query: Select[Any], table: Any, cursor: str | None, limit: int) -> Select[Any]:
    """``query`` ordered newest first, after ``cursor``, one row more than ``limit``."""
    if cursor:
        stamp, item_id = decode(cursor)
        query = query.where(or_(table.created_at < stamp,
                                and_(table.created_at == stamp, table.id < item_id)))
    return query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)


def next_cursor(rows: list[Any], limit: int) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode(last.created_at, last.id)

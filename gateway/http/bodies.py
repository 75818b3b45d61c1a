"""Request bodies: JSON read exactly (integers beyond 64 bits, NaN and infinities refused), then validated.

Bodies are read as JSON whatever their content type (``curl -d`` sends a form
type). A parameter is bound into SQL as sent, so what cannot be bound as sent
is refused here: orjson reads an integer beyond 64 bits as a float, so a body
with 19 digits in a row is parsed again with exact integers; a member name
given twice is refused (a proxy reading the first ``"sql"`` would see another
statement than the one checked).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import orjson
from fastapi import Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from gateway.errors import InvalidRequest
from gateway.http.problems import errors_text

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # MariaDB's BIGINT and BIGINT UNSIGNED together
# 19 digits in a row: the shortest integer that may be beyond 64 bits (orjson reads those as floats).
_LONG_NUMBER = re.compile(rb"\d{19}")
Model = TypeVar("Model", bound=BaseModel)


def _bindable(value: object) -> object:
    """Refuse what would not be bound as sent: integers beyond 64 bits, NaN and infinities."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        raise ValueError("integer outside the 64-bit range")  # else it would be bound as a rounded double
    if type(value) is float and not math.isfinite(value):
        raise ValueError("NaN and infinite numbers cannot be bound")
    return value


Param = Annotated[StrictBool | StrictInt | StrictFloat | StrictStr | None, BeforeValidator(_bindable)]


class StatementBody(BaseModel):
    """One statement with its parameters."""

    model_config = ConfigDict(extra="forbid")
    sql: Annotated[str, Field(min_length=1)]
    params: list[Param] = Field(default_factory=list)


class QueryBody(StatementBody):
    """Body of ``POST /v1/query``."""

    target: Annotated[str, Field(min_length=1, max_length=128)]
    max_rows: Annotated[int | None, Field(ge=1)] = None
    reason: Annotated[str | None, Field(max_length=500)] = None  # shown to reviewers when the statement is held


class TransactionBody(BaseModel):
    """Body of ``POST /v1/transaction``."""

    model_config = ConfigDict(extra="forbid")
    target: Annotated[str, Field(min_length=1, max_length=128)]
    statements: Annotated[list[StatementBody], Field(min_length=1)]
    reason: Annotated[str | None, Field(max_length=500)] = None  # shown to reviewers when the work is held


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency parsing the body as JSON (whatever its content type) into ``model``."""

    async def parse(request: Request) -> Model:
        raw = await request.body()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the body is not valid JSON") from None
        if _LONG_NUMBER.search(raw) or raw.count(b":") > _members(data):
            data = _exact_numbers(raw)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(errors_text(exc.errors())) from None

    return parse


def _refuse_constant(name: str) -> object:
    raise InvalidRequest(f"{name} is not a JSON number")


def _members(value: object) -> int:
    """How many object members ``value`` holds, at every depth."""
    if isinstance(value, dict):
        return len(value) + sum(_members(v) for v in value.values() if isinstance(v, dict | list))
    if isinstance(value, list):
        return sum(_members(v) for v in value if isinstance(v, dict | list))
    return 0


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 8259 leaves the meaning open: a proxy or log reading the first of two "sql" members
        # would see another statement than the one the gateway checks and runs.
        raise InvalidRequest("a JSON object in the body has the same member name twice")
    return result


def _exact_numbers(raw: bytes) -> object:
    """Parse again, keeping integers exact and refusing a member name given twice.

    orjson reads an integer beyond 64 bits as a float, which would pass as one,
    and keeps the last of two members of one name. The second parse runs only
    when one could matter: 19 or more digits in a row, or more colons in the
    body than members parsed (every member takes one colon outside strings,
    so without spare colons no member can have been given twice).
    """
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_members)
    except ValueError:  # more digits than int() takes (sys.int_info.default_max_str_digits)
        raise InvalidRequest("a number in the body has too many digits") from None

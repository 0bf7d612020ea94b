"""Reading a request's input: ids in paths, numbers in queries, JSON bodies.

The web side of :mod:`db.inputs`: the same checks the forms and the CLI use, turned
into the API's errors (404 for an id no row can have, 400 for a number or a body that
cannot be read, 415/422 for a body of the wrong kind).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from werkzeug.routing import BaseConverter, ValidationError

from db import inputs
from web.errors import ApiError


class IdConverter(BaseConverter):
    """``<id:job_id>``: ASCII digits that fit an id column; anything else matches no route.

    So an id beyond the database's integer range is a plain 404, like an id that has no
    row, instead of a database error.
    """

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not inputs.id_in_range(number):
            raise ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


def query_int(name: str, default: int, *, minimum: int = 1, maximum: int = inputs.MAX_INT) -> int:
    """Return the query parameter ``name`` as a whole number, ``default`` when absent.

    Raises:
      ApiError: 400 naming the parameter when it is not a number in ``minimum..maximum``.
    """
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        return inputs.parse_int(raw, field=name, minimum=minimum, maximum=maximum)
    except inputs.InputError as error:
        raise ApiError(400, str(error), field=name) from None


def json_body() -> Any:
    """Return the decoded JSON body; its size and depth are checked before it is parsed.

    Raises:
      ApiError: 415 when the body is not JSON, 413 when it is too large, 400
        ``invalid_json`` naming the problem when it cannot be read.
    """
    if not request.is_json:
        raise ApiError(415, "Send the body as JSON, with Content-Type: application/json.")
    limit = current_app.config["HANDSON"].MAX_CONTENT_LENGTH
    try:
        return inputs.load_json(request.get_data(cache=True), max_bytes=limit)
    except inputs.InvalidJsonError as error:
        raise ApiError(400, f"The body is {error}.", code="invalid_json") from None


def json_object() -> dict[str, Any]:
    """Return the JSON body, which must be an object.

    Raises:
      ApiError: see :func:`json_body`; 422 when it is not an object.
    """
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(422, "The body must be a JSON object.", code="invalid")
    return data


def optional_json_object() -> dict[str, Any]:
    """Return the JSON object body of a write whose body is optional; ``{}`` without one.

    An empty body is accepted unless it comes as a form (``x-www-form-urlencoded``,
    ``multipart/form-data``, ``text/plain``): a cross-site HTML form cannot post here.
    A body-less ``fetch`` needs no CORS preflight, so a browser saying the request comes
    from another site's page (``Sec-Fetch-Site: cross-site``) is refused too.

    Raises:
      ApiError: 403 from another site's page, 415 for a body (or empty form post) that
        is not JSON, 400 when it does not decode, 422 when it is not an object.
    """
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise ApiError(403, "This API does not take writes from another site's pages.")
    if not request.content_length and (request.is_json or not request.mimetype):
        return {}
    return json_object()


def json_id(data: dict[str, Any], field: str, noun: str) -> int:
    """Return the id in ``data[field]``.

    Raises:
      ApiError: 422 when it is not an integer, 404 when no row can have it.
    """
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"{field} must be an integer.", field=field)
    if not inputs.id_in_range(value):
        shown = str(value) if value < 10**20 else f"{str(value)[:20]}..."
        raise ApiError(404, f"{noun} {shown} does not exist.")
    return value


def last_event_id() -> int | None:
    """Return the ``Last-Event-ID`` header, else the ``last_event_id`` parameter, if any.

    Raises:
      ApiError: 400 when either is not an event seq (a whole number in the column's range).
    """
    found = None
    for field, raw in (
        ("last_event_id", request.args.get("last_event_id")),
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),  # wins when both are sent
    ):
        if raw:
            try:
                found = inputs.parse_int(raw, field=field)
            except inputs.InputError as error:
                raise ApiError(400, f"{error} (an event seq).", field=field) from None
    return found

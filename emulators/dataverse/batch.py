"""OData ``$batch`` framing: parse a ``multipart/mixed`` request into operations and change sets, and
write the ``batchresponse_`` / ``changesetresponse_`` multipart answer with one HTTP response per part.

A request may hold several change sets beside loose requests, run in order (the server's ``_batch``). Each change
set is one transaction: when one of its requests fails, what it did is rolled back and the answer for the whole
change set is that single error as an ``application/http`` part, not a ``changesetresponse_`` (OData 4.01 part 1
§11.7.7.5 "Multipart Batch Response"); with ``Prefer: odata.continue-on-error`` the other change sets and loose
requests still run, without it the batch stops there and answers with that error's status (Microsoft's "Execute
batch operations using the Web API": change sets, handling errors).

Lines may end in CRLF (as sent by .NET and most clients) or bare LF; responses always use CRLF.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from .errors import ApiError

MAX_REQUESTS = 1000

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


@dataclass
class PartResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    content_id: str | None = None


def boundary_of(content_type: str | None) -> str | None:
    found = _BOUNDARY.search(content_type or "")
    return (found.group(1) or found.group(2)) if found else None


def _split(body: bytes, boundary: str) -> list[bytes]:
    """The parts between ``--boundary`` delimiters (preamble and epilogue dropped)."""
    delimiter = b"--" + boundary.encode()
    pieces = body.split(delimiter)
    parts: list[bytes] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        # the rest of the delimiter line, and the line break before the next delimiter, are framing
        piece = piece.split(b"\n", 1)[1] if b"\n" in piece else b""
        if piece.endswith(b"\r\n"):
            piece = piece[:-2]
        elif piece.endswith(b"\n"):
            piece = piece[:-1]
        parts.append(piece)
    return parts


def _head_and_rest(data: bytes) -> tuple[dict[str, str], bytes]:
    """Headers up to the first empty line, and what follows."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            head, rest = data[:index], data[index + len(separator) :]
            break
    else:
        head, rest = data, b""
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").splitlines():
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _bad(message: str) -> ApiError:
    return ApiError(400, "0x80060888", message)


def _operation(part: bytes) -> Operation:
    part_headers, http = _head_and_rest(part)
    if "application/http" not in part_headers.get("content-type", "").lower():
        raise _bad("Each batch part must have Content-Type application/http or be a multipart/mixed change set.")
    http = http.lstrip(b"\r\n")
    line_end = http.find(b"\n")
    request_line = (http if line_end < 0 else http[:line_end]).decode("utf-8", "replace").strip()
    pieces = request_line.split(" ")
    if len(pieces) < 2:
        raise _bad(f"The batch part has no valid request line: '{request_line[:100]}'.")
    rest = b"" if line_end < 0 else http[line_end + 1 :]
    if rest.startswith(b"\r\n") or rest.startswith(b"\n"):
        headers, body = {}, rest.lstrip(b"\r\n")
    else:
        headers, body = _head_and_rest(rest)
    return Operation(
        pieces[0].upper(),
        pieces[1],
        headers,
        body.rstrip(b"\r\n"),
        part_headers.get("content-id") or headers.get("content-id"),
    )


def parse(body: bytes, content_type: str | None) -> list[Operation | ChangeSet]:
    boundary = boundary_of(content_type)
    if not content_type or "multipart/mixed" not in content_type.lower() or not boundary:
        raise _bad("The content type of a $batch request must be multipart/mixed with a boundary.")
    items: list[Operation | ChangeSet] = []
    count = 0
    for part in _split(body, boundary):
        headers, rest = _head_and_rest(part)
        content = headers.get("content-type", "")
        if "multipart/mixed" in content.lower():
            inner = boundary_of(content)
            if not inner:
                raise _bad("A change set needs a boundary.")
            changeset = ChangeSet()
            for inner_part in _split(rest, inner):
                inner_headers, _ = _head_and_rest(inner_part)
                if "multipart/mixed" in inner_headers.get("content-type", "").lower():
                    raise _bad("Change sets cannot be nested.")
                operation = _operation(inner_part)
                if operation.method == "GET":
                    raise _bad("GET requests are not allowed inside a change set.")  # text unverified
                changeset.operations.append(operation)
            count += len(changeset.operations)
            items.append(changeset)
        else:
            operation = _operation(part)
            if operation.url.rstrip("/").endswith("$batch"):
                raise _bad("A batch request cannot contain another batch request.")  # text unverified
            items.append(operation)
            count += 1
        if count > MAX_REQUESTS:
            raise _bad(f"The number of requests in the batch exceeds the maximum of {MAX_REQUESTS}.")  # unverified
    if not items:
        raise _bad("The $batch request contains no operations.")
    return items


_PHRASES = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def _http_part(response: PartResponse) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if response.content_id is not None:
        lines.append(f"Content-ID: {response.content_id}")
    lines += ["", f"HTTP/1.1 {response.status} {_PHRASES.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + response.body


def build(items: list[PartResponse | list[PartResponse]]) -> tuple[bytes, str]:
    """The multipart body and its Content-Type; a list item is a successful change set, a failed one is its error."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[bytes] = []
    for item in items:
        chunks.append(f"--{boundary}\r\n".encode())
        if isinstance(item, list):
            inner = f"changesetresponse_{uuid.uuid4()}"
            chunks.append(f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n".encode())
            for response in item:
                chunks.append(f"--{inner}\r\n".encode() + _http_part(response) + b"\r\n")
            chunks.append(f"--{inner}--\r\n".encode())
        else:
            chunks.append(_http_part(item) + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"

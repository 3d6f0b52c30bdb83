"""Mailchimp's error documents (RFC 9457 problem+json) and the faults a caller can meet."""

from __future__ import annotations

import json
import uuid
from typing import Any

from emulators.common import Response

PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_CONTENT_TYPE = "application/problem+json; charset=utf-8"
DESCRIBED_BY = '<https://api.mailchimp.com/schema/3.0/ProblemDetailDocument.json>; rel="describedBy"'

VALIDATION_DETAIL = "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
NOT_FOUND_DETAIL = "The requested resource could not be found."
TOO_MANY_CONNECTIONS = "You have exceeded the limit of 10 simultaneous connections."


class ApiError(Exception):
    """An error the API answers with a problem document instead of a result."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def new_request_id() -> str:
    return str(uuid.uuid4())


def problem_response(problem: ApiError, request_id: str) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request_id,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    headers = {
        "Content-Type": PROBLEM_CONTENT_TYPE,
        "X-Request-Id": request_id,
        "Link": DESCRIBED_BY,
        **problem.headers,
    }
    return Response(problem.status, json.dumps(body, separators=(",", ":")).encode(), headers)


def not_found() -> ApiError:
    return ApiError(404, "Resource Not Found", NOT_FOUND_DETAIL)


def invalid_resource(detail: str = VALIDATION_DETAIL, errors: list[dict[str, str]] | None = None) -> ApiError:
    return ApiError(400, "Invalid Resource", detail, errors)


def field_error(field: str, message: str) -> ApiError:
    return invalid_resource(VALIDATION_DETAIL, [{"field": field, "message": message}])


def missing_fields(*names: str) -> ApiError:
    return invalid_resource(errors=[{"field": "", "message": f"Required fields were not provided: {', '.join(names)}"}])


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "Bad Request", detail)


def member_exists(email: str) -> ApiError:
    return ApiError(
        400, "Member Exists", f"{email} is already a list member. Use PUT to insert or update list members."
    )


def compliance_state(email: str) -> ApiError:
    return ApiError(
        400,
        "Member In Compliance State",
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.",
    )


def forgotten_email(email: str) -> ApiError:
    return ApiError(
        400,
        "Forgotten Email Not Subscribed",
        f"{email} was permanently deleted and cannot be re-imported. "
        "The contact must re-subscribe to get back on the list.",
    )


def fake_email(email: str) -> ApiError:
    return invalid_resource(f"{email} looks fake or invalid, please enter a real email address.")


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

# Titles and details of the faults the base class injects, in Mailchimp's words.
FAULT_TEXT = {
    400: ("Bad Request", "The request could not be processed."),
    401: ("API Key Invalid", "Your API key may be invalid, or you've attempted to access the wrong datacenter."),
    403: ("Forbidden", "You don't have permission to access this resource."),
    404: ("Resource Not Found", NOT_FOUND_DETAIL),
    429: ("TooManyRequests", TOO_MANY_CONNECTIONS),
    500: (
        "InternalServerError",
        "A deep, internal error has occurred during the processing of your request. Please contact support.",
    ),
    503: ("Service Unavailable", "The service is temporarily unavailable. Please try again later."),
}

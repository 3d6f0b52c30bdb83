"""Dataverse-shaped errors: ``{"error": {"code": "0x...", "message": "..."}}`` with the real codes.

Codes and messages come from Microsoft's published Web API error catalogue where one exists
(``ObjectDoesNotExist``, ``ConcurrencyVersionMismatch``, ``DuplicateRecord``, ``ExpiredVersionStamp``,
``ChangeTrackingNotEnabledForEntity``, ``CannotUpdateBecauseItIsReadOnly``, the service-protection
codes, ...). Messages the catalogue does not give are marked ``# text unverified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ApiError(Exception):
    """An error the emulated service answers with; raised anywhere inside a handler."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code} {self.message}"


ENTITY = "Microsoft.Dynamics.CRM"


def not_found(logical_name: str, record_id: str) -> ApiError:
    return ApiError(404, "0x80040217", f"{logical_name} With Id = {record_id} Does Not Exist")


def segment_not_found(segment: str) -> ApiError:
    return ApiError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def unknown_property(name: str, type_name: str) -> ApiError:
    return ApiError(400, "0x80060888", f"Could not find a property named '{name}' on type '{ENTITY}.{type_name}'.")


def undeclared_property(name: str, type_name: str) -> ApiError:
    return ApiError(
        400,
        "0x80060888",
        f"The property '{name}' does not exist on type '{ENTITY}.{type_name}'. Make sure to only use "
        "property names that are defined by the type or mark the type as open type.",
    )


def undeclared_navigation(name: str) -> ApiError:
    """An ``<name>@odata.bind`` whose navigation property does not exist (names are case-sensitive)."""
    return ApiError(
        400,
        "0x0",
        "An error occurred while validating input parameters: Microsoft.OData.ODataException: "
        f"An undeclared property '{name}' which only has property annotations in the payload "
        "but no property value was found in the payload. In OData, only declared navigation "
        "properties and declared named streams can be represented as properties without "
        "values.",
    )


def bad_literal(value: object, edm_type: str) -> ApiError:
    return ApiError(400, "0x80060888", f"Cannot convert the literal '{value}' to the expected type '{edm_type}'.")


def version_mismatch() -> ApiError:
    return ApiError(
        412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    )


def duplicate_key() -> ApiError:
    return ApiError(412, "0x80040237", "A record with matching key values already exists.")


def read_only_record() -> ApiError:
    return ApiError(400, "0x8004022e", "The object cannot be updated because it is read-only.")


def inactive_record() -> ApiError:
    return ApiError(400, "0x80040230", "The object cannot be updated because it is inactive.")


def too_long(attribute: str, entity: str, max_length: int) -> ApiError:
    return ApiError(
        400,
        "0x80044331",
        f"A validation error occurred.  The length of the '{attribute}' attribute of "
        f"the '{entity}' entity exceeded the maximum allowed length of '{max_length}'.",
    )


def out_of_range(value: object, attribute: str, entity: str, accepted: str) -> ApiError:
    return ApiError(
        400,
        "0x80044331",
        f"A validation error occurred. The value {value} of '{attribute}' on record "
        f"of type '{entity}' is outside the valid range. Accepted Values: {accepted}",
    )


def not_valid_for(attribute: str, entity: str, operation: str) -> ApiError:  # text unverified
    return ApiError(400, "0x80040203", f"Attribute '{attribute}' of entity '{entity}' is not valid for {operation}.")


def unsupported_query_option(option: str) -> ApiError:  # text unverified
    return ApiError(400, "0x80060888", f"The query parameter {option} is not supported")


def track_changes_option(option: str) -> ApiError:
    return ApiError(
        400, "0x80060888", f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.'
    )


def change_tracking_disabled(logical_name: str) -> ApiError:
    return ApiError(400, "0x80072491", f"Entity {logical_name} isn't enabled for change tracking.")


def expired_delta_token() -> ApiError:
    return ApiError(
        400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync."
    )


def bad_delta_token(token: str) -> ApiError:  # text unverified
    return ApiError(400, "0x80044352", f"The delta token '{token}' is not valid. Please perform a full sync.")


def request_limit(limit: int, window: int, retry_after: str) -> ApiError:
    return ApiError(
        429,
        "0x80072322",
        f"Number of requests exceeded the limit of {limit} over time window of {window} seconds.",
        {"Retry-After": retry_after},
    )


def execution_limit(limit_ms: int, window: int, retry_after: str) -> ApiError:
    return ApiError(
        429,
        "0x80072321",
        f"Combined execution time of incoming requests exceeded limit of {limit_ms:,}  milliseconds over "
        f"time window of {window} seconds. Decrease number of concurrent requests or reduce the duration "
        "of requests and try again later.",
        {"Retry-After": retry_after},
    )


def concurrency_limit(limit: int, retry_after: str) -> ApiError:
    return ApiError(
        429, "0x80072326", f"Number of concurrent requests exceeded the limit of {limit}.", {"Retry-After": retry_after}
    )


def unexpected(status: int) -> ApiError:  # text unverified
    if status == 503:
        return ApiError(503, "0x80040216", "The service is temporarily unavailable. Please try again later.")
    return ApiError(status, "0x80040216", "An unexpected error occurred.")


def not_implemented(what: str) -> ApiError:
    """Something the real service does that this emulator deliberately does not."""
    return ApiError(501, "0x80040216", f"The Dataverse emulator does not implement {what}.")

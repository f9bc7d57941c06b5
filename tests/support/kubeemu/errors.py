"""The API server's error answers: ``ApiError`` (rendered as a ``Status`` object) and 422 Invalid.

Why a module of its own: the store, the admission rules and the HTTP server all raise these, and keeping them
apart from the store lets ``admission`` build on them without importing the store.
"""

from __future__ import annotations

from typing import Any

from .builtins import ResourceDef


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "details": self.details,
        }


def invalid(res: ResourceDef, name: str, errors: list[tuple[str, str]]) -> ApiError:
    text = errors[0][1] if len(errors) == 1 else "[" + ", ".join(message for _, message in errors) + "]"
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    causes = [
        {"reason": "FieldValueInvalid", "message": message, "field": field} for field, message in errors
    ]
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {"name": name, "group": res.group, "kind": res.kind, "causes": causes},
    )

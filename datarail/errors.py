"""Typed errors. Each carries the context a person needs to act: which source unit,
dataset (resource), row and field, and what to do about it."""

from __future__ import annotations


class DatarailError(Exception):
    """Base class of every error datarail raises on purpose."""

    def __init__(self, message: str, *, unit: str | None = None, resource: str | None = None,
                 row: int | None = None, field: str | None = None, hint: str | None = None):
        self.message = message
        self.unit = unit
        self.resource = resource
        self.row = row
        self.field = field
        self.hint = hint
        super().__init__(str(self))

    def context(self) -> dict:
        """The error's context as a dict, for logs and the warehouse's run records."""
        return {k: v for k, v in {"unit": self.unit, "resource": self.resource, "row": self.row,
                                  "field": self.field}.items() if v is not None}

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.context().items())
        text = f"{self.message} [{where}]" if where else self.message
        return f"{text}. {self.hint}" if self.hint else text


class CatalogError(DatarailError):
    """The catalog YAML is invalid: names the file, the entry and the field."""

    def __init__(self, message: str, *, file: str, entry: str | None = None, field: str | None = None):
        self.file = file
        self.entry = entry
        super().__init__(message, field=field)

    def __str__(self) -> str:
        parts = [f"file {self.file}"]
        if self.entry:
            parts.append(f"entry {self.entry}")
        if self.field:
            parts.append(f"field {self.field}")
        return f"{', '.join(parts)}: {self.message}"


class ExtractError(DatarailError):
    """A source system could not be read (unreachable, bad file, bad page)."""


class SchemaDriftError(ExtractError):
    """The delivered columns do not match the catalog under the resource's drift policy."""


class DecodeError(ExtractError):
    """A file does not decode cleanly in its declared or detected encoding."""


class ReconciliationError(DatarailError):
    """Row counts do not reconcile: extracted != staged, or staged != loaded + quarantined."""


class WarehouseError(DatarailError):
    """The warehouse refused a statement or is in an unexpected state."""

"""Typed catalog objects. Field names follow the national catalog guide (发改高技〔2017〕1272号)
where one exists; see ``catalog/README.md`` for the mapping."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
from pydantic import Field as PField

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _identifier(value: str) -> str:
    """Names that become SQL identifiers or file names: lower snake case, checked here once."""
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} is not a valid identifier (lower case letters, digits, _; starts with a letter)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]

FieldType = Literal["string", "integer", "decimal", "date", "datetime", "boolean"]
SemanticType = Literal[
    "resident_id", "uscc", "division_code", "phone", "date", "person_name", "address", "gender",
    "email", "licence_no", "code", "amount", "text",
]
SystemKind = Literal["sql", "file", "http"]
UpdateCycle = Literal["realtime", "daily", "weekly", "monthly", "quarterly", "yearly"]
SharingType = Literal["unconditional", "conditional", "not_shared"]
BaseLibrary = Literal["population", "legal_entity", "credit", "licence", "none"]

# Days a delivery may be old before it counts as stale, per declared update cycle.
CYCLE_DAYS: dict[str, int] = {"realtime": 1, "daily": 1, "weekly": 7, "monthly": 31,
                              "quarterly": 92, "yearly": 366}

PERSONAL_SEMANTICS = frozenset({"resident_id", "phone", "person_name", "address", "email"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class System(_Strict):
    """An information system a source unit owns; credentials come from an Airflow connection."""

    code: Identifier
    name: str
    kind: SystemKind
    conn_id: str = PField(description="Airflow connection id holding the credentials / location")


class Unit(_Strict):
    """A government department: a source unit (数源单位) when it owns systems, a consumer
    unit (用数单位) when it handles service items, often both."""

    code: Identifier
    name_zh: str
    name_en: str
    contact_email: str
    region: str = PField(pattern=r"^\d{6}$", description="GB/T 2260 division code of the unit")
    systems: tuple[System, ...] = ()

    def system(self, code: str) -> System:
        for s in self.systems:
            if s.code == code:
                return s
        raise KeyError(code)


SourceUnit = Unit


class Field(_Strict):
    """One data item (信息项) of a resource."""

    name: Identifier
    type: FieldType = "string"
    semantic: SemanticType | None = None
    required: bool = False
    source: str | None = PField(None, description="column / header / JSON key at the source, if not `name`")
    description: str = ""
    min: date | None = PField(None, description="earliest valid date (date/datetime fields)")
    max_offset_days: int | None = PField(
        0, description="latest valid date = run date + this many days (null: no upper bound)")
    values: tuple[str, ...] | None = PField(None, description="allowed values (value set)")

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @property
    def personal(self) -> bool:
        return self.semantic in PERSONAL_SEMANTICS


class Location(_Strict):
    """Where the resource lives in its system: exactly one of table, file, endpoint."""

    table: str | None = None
    file: str | None = PField(None, description="glob pattern inside the system's drop folder")
    endpoint: str | None = PField(None, description="path of the JSON API, relative to the base URL")
    encoding: str | None = PField(None, description="declared file encoding (utf-8, gbk, gb18030); detected if unset")
    sheet: str | None = None
    pagination: Literal["page", "offset", "cursor"] | None = None
    records_key: str = "data"

    @model_validator(mode="after")
    def _exactly_one(self) -> Location:
        given = [k for k in ("table", "file", "endpoint") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of table, file, endpoint")
        return self


class ChangeTracking(_Strict):
    mode: Literal["watermark", "snapshot"] = "snapshot"
    column: Identifier | None = PField(None, description="watermark field (mode watermark)")
    lookback_days: int = 0

    @model_validator(mode="after")
    def _column_for_watermark(self) -> ChangeTracking:
        if self.mode == "watermark" and not self.column:
            raise ValueError("mode watermark needs a column")
        return self


class Sharing(_Strict):
    type: SharingType
    condition: str | None = PField(None, description="共享条件, or the basis for not sharing")
    granted_to: tuple[Identifier, ...] = PField((), description="consumer units approved (conditional)")

    @model_validator(mode="after")
    def _condition_when_needed(self) -> Sharing:
        if self.type != "unconditional" and not self.condition:
            raise ValueError(f"sharing type {self.type} needs a condition (or the basis for not sharing)")
        return self


class Resource(_Strict):
    """A data resource of the resource catalog (政务信息资源目录)."""

    code: str = PField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,40}$", description="信息资源代码")
    table: Identifier = PField(description="name of its ods table in the warehouse")
    name_zh: str
    name_en: str
    unit: Identifier = PField(description="provider unit (信息资源提供方)")
    system: Identifier
    location: Location
    fields: tuple[Field, ...]
    primary_key: tuple[Identifier, ...]
    change_tracking: ChangeTracking = ChangeTracking()
    update_cycle: UpdateCycle
    sharing: Sharing
    base_library: BaseLibrary = "none"
    status: Literal["active", "planned"] = PField(
        "active", description="planned: catalogued but the source does not deliver it yet")

    # Field validators (not one model validator) so an error names the field it concerns.
    @field_validator("fields")
    @classmethod
    def _no_duplicate_fields(cls, fields: tuple[Field, ...]) -> tuple[Field, ...]:
        names = [f.name for f in fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"fields listed twice: {dup}")
        return fields

    @field_validator("primary_key")
    @classmethod
    def _keys_are_fields(cls, keys: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        names = {f.name for f in info.data.get("fields", ())}
        for k in keys:
            if names and k not in names:
                raise ValueError(f"primary_key names {k!r}, which is not a field")
        return keys

    @field_validator("change_tracking")
    @classmethod
    def _watermark_is_field(cls, ct: ChangeTracking, info: ValidationInfo) -> ChangeTracking:
        names = {f.name for f in info.data.get("fields", ())}
        if ct.column and names and ct.column not in names:
            raise ValueError(f"change_tracking.column {ct.column!r} is not a field")
        return ct

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def published(self) -> bool:
        return self.sharing.type != "not_shared"


class Responsibility(_Strict):
    """An entry of the data-provision responsibility list (数据提供责任清单)."""

    unit: Identifier
    resource: str
    cycle: UpdateCycle


class Need(_Strict):
    """A sharing need of a service item: a material or data the item requires."""

    code: str = PField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,40}$")
    material_zh: str
    material_en: str = ""
    resources: tuple[str, ...] = PField((), description="resource codes that meet it; empty: no resource yet")


class ServiceItem(_Strict):
    """A government service item (政务服务事项) with its sharing needs."""

    code: str = PField(pattern=r"^[A-Z0-9][A-Z0-9-]{2,40}$")
    name_zh: str
    name_en: str
    handling_unit: Identifier = PField(description="consumer unit that handles the item (用数单位)")
    needs: tuple[Need, ...]


class Catalog(_Strict):
    """The whole catalog, cross-checked: every reference resolves."""

    units: tuple[Unit, ...]
    resources: tuple[Resource, ...]
    responsibilities: tuple[Responsibility, ...]
    items: tuple[ServiceItem, ...]

    def unit(self, code: str) -> Unit:
        for u in self.units:
            if u.code == code:
                return u
        raise KeyError(code)

    def resource(self, code: str) -> Resource:
        for r in self.resources:
            if r.code == code:
                return r
        raise KeyError(code)

    def resource_by_table(self, table: str) -> Resource:
        for r in self.resources:
            if r.table == table:
                return r
        raise KeyError(table)

    @property
    def source_units(self) -> tuple[Unit, ...]:
        """Units that own at least one resource, in catalog order."""
        owners = {r.unit for r in self.resources}
        return tuple(u for u in self.units if u.code in owners)

    def resources_of(self, unit: str, *, active_only: bool = True) -> tuple[Resource, ...]:
        return tuple(r for r in self.resources
                     if r.unit == unit and (r.status == "active" or not active_only))

    @property
    def needs(self) -> tuple[tuple[ServiceItem, Need], ...]:
        return tuple((item, need) for item in self.items for need in item.needs)

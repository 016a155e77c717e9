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


class Partition(_Strict):
    """Split a large SQL table into key ranges extracted in parallel (one mapped Airflow task
    per range). Small tables stay one task: without this setting, or when the key span is
    below ``min_span``, the resource is extracted in one piece."""

    column: Identifier = PField(description="an integer primary-key field to split on")
    ranges: int = PField(4, ge=2, le=64, description="how many key ranges (mapped tasks) at most")
    min_span: int = PField(200_000, ge=1, description="key spans smaller than this are not split")


class Sharing(_Strict):
    type: SharingType
    condition: str | None = PField(None, description="共享条件, or the basis for not sharing")
    granted_to: tuple[Identifier, ...] = PField((), description="consumer units approved (conditional)")

    @model_validator(mode="after")
    def _condition_when_needed(self) -> Sharing:
        if self.type != "unconditional" and not self.condition:
            raise ValueError(f"sharing type {self.type} needs a condition (or the basis for not sharing)")
        return self


Severity = Literal["blocking", "warning"]


class QualityCheck(_Strict):
    """A check added to a resource in the catalog YAML, beyond those its fields imply
    (``quality/README.md`` lists every check kind and its default severity).

    - ``date_order``: ``fields: [earlier, later]``; the earlier date must not be after the later one.
    - ``id_gender``: ``field`` (a resident ID) and either ``gender_field`` (the declared gender
      column) or ``gender`` (a fixed 男/女, e.g. the male partner of a marriage record).
    - ``exists``: every non-null ``field`` value exists in ``ref``: a resource code (matched
      against its primary key) or a base library (``population``: resident IDs,
      ``legal_entity``: credit codes). Checked in the warehouse after the load.
    """

    kind: Literal["date_order", "id_gender", "exists"]
    field: Identifier | None = None
    fields: tuple[Identifier, ...] = ()
    gender_field: Identifier | None = None
    gender: Literal["男", "女"] | None = None
    ref: str | None = PField(None, description="exists: resource code, or population / legal_entity")
    severity: Severity | None = PField(None, description="default per kind (quality/README.md)")

    @model_validator(mode="after")
    def _shape(self) -> QualityCheck:
        if self.kind == "date_order" and len(self.fields) != 2:
            raise ValueError("date_order needs fields: [earlier, later]")
        if self.kind == "id_gender" and (not self.field or (self.gender_field is None) == (self.gender is None)):
            raise ValueError("id_gender needs field and exactly one of gender_field, gender")
        if self.kind == "exists" and (not self.field or not self.ref):
            raise ValueError("exists needs field and ref")
        return self


class VolumeRule(_Strict):
    """Volume against the last ``runs`` loaded deliveries of earlier intervals: fails when a
    delivery has fewer than ``min_ratio`` x their median rows (a tenth of the usual fails).
    ``enabled`` defaults to on for snapshot resources and off for watermark ones (whose
    deliveries are changes, so their size follows activity, not the table)."""

    enabled: bool | None = None
    runs: int = PField(5, ge=1, le=100)
    min_history: int = PField(3, ge=1, description="fewer earlier runs than this: no baseline yet, passes")
    min_ratio: float = PField(0.5, gt=0, le=1)
    severity: Severity = "blocking"


class FreshnessRule(_Strict):
    """Freshness against the declared update cycle: the newest change delivered (``column``,
    default the change-tracking column or ``updated_at``) may be at most ``max_age_days``
    (default the cycle's days, ``CYCLE_DAYS``) before the run date."""

    enabled: bool = True
    column: Identifier | None = None
    max_age_days: int | None = PField(None, ge=0)
    severity: Severity = "warning"


class QualityRules(_Strict):
    """Per-resource quality settings (``quality:`` in the resource YAML); every part optional."""

    checks: tuple[QualityCheck, ...] = ()
    severity: tuple[tuple[str, Severity], ...] = PField(
        (), description="override by check id ('phone:phone') or kind ('phone'); a mapping in YAML")
    volume: VolumeRule = VolumeRule()
    freshness: FreshnessRule = FreshnessRule()
    auto_id_gender: bool = PField(True, description="pair the only resident-ID field with the only gender field")
    auto_licence_holder: bool = PField(
        True, description="licence library: the holder (first resident ID / USCC field) must exist "
                          "in the population / legal-entity library")

    @field_validator("severity", mode="before")
    @classmethod
    def _mapping(cls, value):
        # A mapping in YAML, a sorted tuple here: the frozen model stays hashable.
        return tuple(sorted(value.items())) if isinstance(value, dict) else value

    def severity_for(self, check_id: str, default: str) -> str:
        """The severity of ``check_id``: an override by id, else by kind, else ``default``."""
        overrides = dict(self.severity)
        return overrides.get(check_id) or overrides.get(check_id.split(":", 1)[0]) or default


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
    authoritative_for: tuple[Annotated[str, PField(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")], ...] = PField(
        (), description="base-library attributes this resource is the authoritative source of, as "
                        "<library>.<attribute> (e.g. population.birth_date): a cross-source conflict on one of "
                        "them is attributed to this resource. Unset: the base model's declared default source")
    schema_drift: Literal["evolve", "freeze", "discard_row", "discard_value"] = PField(
        "evolve", description="what extraction does when the source's columns drift from the catalog "
                              "(see extractors/drift.py)")
    partition: Partition | None = PField(None, description="SQL only: extract in parallel key ranges")
    quality: QualityRules = PField(QualityRules(), description="check additions and settings (quality/README.md)")

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

    @field_validator("partition")
    @classmethod
    def _partition_on_integer_key(cls, part: Partition | None, info: ValidationInfo) -> Partition | None:
        fields = {f.name: f for f in info.data.get("fields", ())}
        if part is not None and fields:
            f = fields.get(part.column)
            if f is None or f.type != "integer" or part.column not in info.data.get("primary_key", ()):
                raise ValueError(f"partition.column {part.column!r} must be an integer primary-key field")
        return part

    @field_validator("quality")
    @classmethod
    def _quality_fields_exist(cls, rules: QualityRules, info: ValidationInfo) -> QualityRules:
        names = {f.name for f in info.data.get("fields", ())}
        if not names:
            return rules
        for i, c in enumerate(rules.checks):
            for n in (c.field, c.gender_field, *c.fields):
                if n is not None and n not in names:
                    raise ValueError(f"quality.checks[{i}] ({c.kind}) names {n!r}, which is not a field")
        if rules.freshness.column and rules.freshness.column not in names:
            raise ValueError(f"quality.freshness.column {rules.freshness.column!r} is not a field")
        return rules

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

    def authority(self, attribute: str) -> Resource | None:
        """The resource declared authoritative for ``<library>.<attribute>``, if any."""
        for r in self.resources:
            if attribute in r.authoritative_for:
                return r
        return None

    @field_validator("resources")
    @classmethod
    def _one_authority_per_attribute(cls, resources: tuple[Resource, ...]) -> tuple[Resource, ...]:
        seen: dict[str, str] = {}
        for r in resources:
            for attr in r.authoritative_for:
                if attr in seen:
                    raise ValueError(f"{attr} is declared authoritative by both {seen[attr]} and {r.code}")
                seen[attr] = r.code
        return resources

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

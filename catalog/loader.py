"""Load the catalog folder into a validated :class:`~catalog.models.Catalog`.

Layout of a catalog folder::

    units.yaml              units: [...]            source and consumer units
    resources/*.yaml        resources: [...]        the resource catalog, one file per unit
    responsibilities.yaml   responsibilities: [...] the data-provision responsibility list
    items/*.yaml            items: [...]            service items and their sharing needs

Every error names the file, the entry (its code) and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from catalog.models import Catalog, Resource, Responsibility, ServiceItem, Unit
from datarail.errors import CatalogError


def _read(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", file=str(path)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise CatalogError(f"expected a mapping with a list under '{key}:'", file=str(path))
    return doc[key]


def _parse(model: type[BaseModel], raw: Any, path: Path, index: int):
    entry = raw.get("code", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or None
        # Name fields by their `name` rather than a list index where possible.
        if isinstance(raw, dict) and err["loc"][:1] == ("fields",) and len(err["loc"]) > 1:
            try:
                fname = raw["fields"][err["loc"][1]]["name"]
                loc = ".".join(["fields", str(fname), *map(str, err["loc"][2:])])
            except (KeyError, IndexError, TypeError):
                pass
        raise CatalogError(err["msg"], file=str(path), entry=str(entry), field=loc) from exc


def _files(folder: Path, name: str) -> list[Path]:
    single = folder / f"{name}.yaml"
    many = sorted((folder / name).glob("*.yaml")) if (folder / name).is_dir() else []
    return ([single] if single.exists() else []) + many


def load_catalog(folder: str | Path) -> Catalog:
    """Load and cross-check a catalog folder; raise :class:`CatalogError` on the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogError("catalog folder does not exist", file=str(folder))
    origin: dict[tuple[str, str], Path] = {}

    def load(name: str, key: str, model: type[BaseModel]) -> list:
        out = []
        paths = _files(folder, name)
        if not paths:
            raise CatalogError(f"missing {name}.yaml or {name}/*.yaml", file=str(folder))
        for path in paths:
            for i, raw in enumerate(_read(path, key)):
                obj = _parse(model, raw, path, i)
                ident = getattr(obj, "code", None) or f"{obj.unit}/{obj.resource}"
                if (name, ident) in origin:
                    raise CatalogError(f"duplicate code, first defined in {origin[(name, ident)]}",
                                       file=str(path), entry=ident, field="code")
                origin[(name, ident)] = path
                out.append(obj)
        return out

    units = load("units", "units", Unit)
    resources = load("resources", "resources", Resource)
    responsibilities = load("responsibilities", "responsibilities", Responsibility)
    items = load("items", "items", ServiceItem)

    unit_by_code = {u.code: u for u in units}
    res_codes = {r.code for r in resources}
    tables: dict[str, str] = {}
    for r in resources:
        path = origin[("resources", r.code)]
        unit = unit_by_code.get(r.unit)
        if unit is None:
            raise CatalogError(f"unknown unit {r.unit!r}", file=str(path), entry=r.code, field="unit")
        if r.system not in {s.code for s in unit.systems}:
            raise CatalogError(f"unit {r.unit} has no system {r.system!r}", file=str(path),
                               entry=r.code, field="system")
        if r.table in tables:
            raise CatalogError(f"table name already used by {tables[r.table]}", file=str(path),
                               entry=r.code, field="table")
        tables[r.table] = r.code
        for g in r.sharing.granted_to:
            if g not in unit_by_code:
                raise CatalogError(f"unknown unit {g!r}", file=str(path), entry=r.code,
                                   field="sharing.granted_to")
    for resp in responsibilities:
        path = origin[("responsibilities", f"{resp.unit}/{resp.resource}")]
        entry = f"{resp.unit}/{resp.resource}"
        if resp.unit not in unit_by_code:
            raise CatalogError(f"unknown unit {resp.unit!r}", file=str(path), entry=entry, field="unit")
        if resp.resource not in res_codes:
            raise CatalogError(f"unknown resource {resp.resource!r}", file=str(path), entry=entry,
                               field="resource")
    for item in items:
        path = origin[("items", item.code)]
        if item.handling_unit not in unit_by_code:
            raise CatalogError(f"unknown unit {item.handling_unit!r}", file=str(path), entry=item.code,
                               field="handling_unit")
        for need in item.needs:
            for code in need.resources:
                if code not in res_codes:
                    raise CatalogError(f"need {need.code} names unknown resource {code!r}",
                                       file=str(path), entry=item.code, field=f"needs.{need.code}.resources")
    return Catalog(units=tuple(units), resources=tuple(resources),
                   responsibilities=tuple(responsibilities), items=tuple(items))

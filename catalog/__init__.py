"""The catalog: the platform's own configuration, as YAML validated into typed objects.

A new source unit or dataset is a catalog entry, not new code. See ``catalog/README.md``.
"""

from catalog.loader import load_catalog
from catalog.models import (
    Catalog,
    Field,
    Need,
    Resource,
    Responsibility,
    ServiceItem,
    SourceUnit,
    System,
)

__all__ = ["Catalog", "Field", "Need", "Resource", "Responsibility", "ServiceItem", "SourceUnit",
           "System", "load_catalog"]

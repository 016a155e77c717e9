"""Custom Great Expectations expectations for the identifier rules and type coercion.

GX 1.24 registers an expectation and its metric when the class is created (a metaclass
writes them into ``great_expectations.expectations.registry``). Importing this module a
second time (``importlib.reload``, or under another module name) redefines the classes;
GX then overwrites its registry entries and logs a warning, which is silenced here so a
reload is quiet and harmless.

Every expectation has a pandas partial only: validation runs on the staged Parquet through
GX's pandas execution engine (see ``quality/README.md``). The partials call the vectorised
rules in :mod:`quality.identifiers` and :mod:`quality.coerce`, so GX and the scalar rules
can never disagree.

Division references: a resident ID's birthplace is checked against a
:class:`~quality.divisions.DivisionReference`. Expectation arguments must be plain JSON, so
the reference is registered here under a key (:func:`register_division_reference`) and the
expectation carries the key; ``None`` means python-stdnum's list (``load_divisions()``).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, ClassVar, Literal, Optional

# Before GX's import: it logs ~200 INFO lines when something (airflow.sdk) set the root
# logger to INFO.
_GX_LOG = logging.getLogger("great_expectations")
if _GX_LOG.level == logging.NOTSET or _GX_LOG.level < logging.WARNING:
    _GX_LOG.setLevel(logging.WARNING)

from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import (  # noqa: E402
    ColumnMapExpectation,
    ColumnPairMapExpectation,
)
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    ColumnMapMetricProvider,
    ColumnPairMapMetricProvider,
    column_condition_partial,
    column_pair_condition_partial,
)

if TYPE_CHECKING:
    from quality.divisions import DivisionReference


def quiet_gx_loggers() -> None:
    """Raise every GX logger to WARNING. Some set their own level on import
    (``data_context.types.base`` sets INFO and announces each ephemeral docs folder), so the
    parent's level alone is not enough; call again after creating a context."""
    _GX_LOG.setLevel(logging.WARNING)
    for name, obj in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(obj, logging.Logger):
            if obj.level != logging.NOTSET and obj.level < logging.WARNING:
                obj.setLevel(logging.WARNING)


quiet_gx_loggers()

__all__ = ["ExpectColumnValuesToBeValidResidentId", "ExpectColumnValuesToBeValidUscc",
           "ExpectColumnValuesToBeValidPhone", "ExpectColumnValuesToCoerceToType",
           "ExpectColumnPairSexDigitToMatchGender", "ExpectColumnValuesToBeInRegisteredSet",
           "register_division_reference", "register_value_set", "quiet_gx_loggers"]

_REFERENCES: dict[str, DivisionReference] = {}


def register_division_reference(reference: DivisionReference) -> str:
    """Make ``reference`` available to :class:`ExpectColumnValuesToBeValidResidentId` and
    return the key to pass as its ``division_reference``. Registering the same object
    again returns the same key."""
    key = f"{reference.source}#{id(reference)}"
    _REFERENCES[key] = reference
    return key


_VALUE_SETS: dict[str, frozenset] = {}


def register_value_set(name: str, values) -> str:
    """Make a (large) value set available to :class:`ExpectColumnValuesToBeInRegisteredSet`
    under a key derived from ``name``; the expectation carries only the key, so GX does not
    copy thousands of values each time it copies the expectation's arguments."""
    frozen = frozenset(values)
    key = f"{name}#{hash(frozen)}"
    _VALUE_SETS[key] = frozen
    return key


def _reference(key: str | None) -> DivisionReference:
    if key is None:
        from quality.divisions import load_divisions
        return load_divisions()
    try:
        return _REFERENCES[key]
    except KeyError:
        raise KeyError(f"division reference {key!r} is not registered in this process; "
                       "call register_division_reference() first") from None


class _QuietRegistry(logging.Filter):
    """Drops GX's 'Overwriting declaration' / 'overwriting metric_provider' warnings that a
    re-import of this module causes; they are expected and harmless here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "verwriting" not in record.getMessage()


_registry_log = logging.getLogger("great_expectations.expectations.registry")
if not any(isinstance(f, _QuietRegistry) for f in _registry_log.filters):
    _registry_log.addFilter(_QuietRegistry())


# --- metrics (pandas partials): True = value is as expected; GX drops nulls before calling --

class ColumnValuesValidResidentId(ColumnMapMetricProvider):
    condition_metric_name = "column_values.datarail_valid_resident_id"
    condition_value_keys = ("run_date", "division_policy", "division_reference")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, run_date, division_policy, division_reference, **kwargs):
        from quality.identifiers import resident_id_problems

        problems = resident_id_problems(column, run_date=date.fromisoformat(run_date),
                                        divisions=_reference(division_reference), policy=division_policy)
        return problems.isna()


class ColumnValuesValidUscc(ColumnMapMetricProvider):
    condition_metric_name = "column_values.datarail_valid_uscc"
    condition_value_keys = ("division_policy", "division_reference")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, division_policy="historic", division_reference=None, **kwargs):
        from quality.identifiers import uscc_problems

        return uscc_problems(column, divisions=_reference(division_reference), policy=division_policy).isna()


class ColumnValuesInRegisteredSet(ColumnMapMetricProvider):
    condition_metric_name = "column_values.datarail_in_registered_set"
    condition_value_keys = ("value_set_key",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, value_set_key, **kwargs):
        try:
            values = _VALUE_SETS[value_set_key]
        except KeyError:
            raise KeyError(f"value set {value_set_key!r} is not registered in this process") from None
        from quality.identifiers import isin_large

        return isin_large(column, values)


class ColumnPairSexDigitMatchesGender(ColumnPairMapMetricProvider):
    """True where the resident ID's 17th character (odd = male) agrees with the gender text;
    rows whose ID is not 17 digits + check or whose gender is not 男/女 are not judged (other
    checks report those)."""

    condition_metric_name = "column_pair_values.datarail_sex_digit_matches_gender"
    condition_domain_keys = ("batch_id", "table", "column_A", "column_B", "row_condition", "condition_parser",
                             "ignore_row_if")
    condition_value_keys = ()

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        from quality.identifiers import sex_of_resident_ids

        sex = sex_of_resident_ids(column_A)
        judged = sex.notna() & column_B.isin(("男", "女"))
        return ~judged | (sex == column_B).fillna(False).astype(bool)


class ColumnValuesValidPhone(ColumnMapMetricProvider):
    condition_metric_name = "column_values.datarail_valid_phone"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        from quality.identifiers import phone_problems

        return phone_problems(column).isna()


class ColumnValuesCoerceToType(ColumnMapMetricProvider):
    condition_metric_name = "column_values.datarail_coerce_to_type"
    condition_value_keys = ("type_",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, type_, **kwargs):
        from quality.coerce import coerce_series

        _typed, failed = coerce_series(column.astype("str").str.strip(), type_)
        return ~failed


# --- expectations ---------------------------------------------------------------------------

_LIBRARY = {"maturity": "experimental", "tags": ["datarail", "column map expectation"],
            "contributors": ["@datarail"], "requirements": ["python-stdnum"]}


class ExpectColumnValuesToBeValidResidentId(ColumnMapExpectation):
    """Expect each non-null value to be a valid GB 11643 resident identity number: 18
    characters, check character per the weights, a real birth date not after ``run_date``
    (ISO text), and a birthplace code known under ``division_policy`` in the registered
    ``division_reference`` (``None``: python-stdnum's list)."""

    run_date: str
    division_policy: Literal["historic", "current", "at_year"] = "historic"
    division_reference: Optional[str] = None  # noqa: UP045 (GX's pydantic v1 models)

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_values.datarail_valid_resident_id"
    success_keys = ("run_date", "division_policy", "division_reference", "mostly")
    args_keys = ("column", "run_date")


class ExpectColumnValuesToBeValidUscc(ColumnMapExpectation):
    """Expect each non-null value to be a valid GB 32100 unified social credit code: 18
    characters over 0-9 A-H J-N P Q R T U W X Y, positions 3-8 a division code known under
    ``division_policy`` in the registered ``division_reference`` (or 100000, national), the
    embedded GB 11714 organisation code's check character and the mod-31 check character."""

    division_policy: Literal["historic", "current", "at_year"] = "historic"
    division_reference: Optional[str] = None  # noqa: UP045 (GX's pydantic v1 models)

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_values.datarail_valid_uscc"
    success_keys = ("division_policy", "division_reference", "mostly")
    args_keys = ("column",)


class ExpectColumnValuesToBeInRegisteredSet(ColumnMapExpectation):
    """Expect each non-null value to be in the value set registered under ``value_set_key``
    (:func:`register_value_set`): ``ExpectColumnValuesToBeInSet`` for reference lists too
    large to travel inside the expectation (the ~6,900 division codes)."""

    value_set_key: str

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_values.datarail_in_registered_set"
    success_keys = ("value_set_key", "mostly")
    args_keys = ("column", "value_set_key")


class ExpectColumnPairSexDigitToMatchGender(ColumnPairMapExpectation):
    """Expect the sex digit of the resident ID in ``column_A`` (GB 11643: the 17th character,
    odd = male) to match the declared gender (男/女) in ``column_B``. Rows where either is
    missing are skipped, and so are rows with a malformed ID or another gender value."""

    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = \
        "either_value_is_missing"

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_pair_values.datarail_sex_digit_matches_gender"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")
    args_keys = ("column_A", "column_B")


class ExpectColumnValuesToBeValidPhone(ColumnMapExpectation):
    """Expect each non-null value to be a mainland mobile (1[3-9] + 9 digits) or a landline
    (0 + 2-3 digit area code, optional '-', 7-8 digits). Validation itself uses GX's
    ``ExpectColumnValuesToMatchRegex`` with the same pattern; this one is for suites that
    want the rule by name."""

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_values.datarail_valid_phone"
    success_keys = ("mostly",)
    args_keys = ("column",)


class ExpectColumnValuesToCoerceToType(ColumnMapExpectation):
    """Expect each non-null text value to coerce to the catalog type ``type_`` by the rules
    of :mod:`quality.coerce` (dates in the accepted shapes and real, integers integral,
    decimals numeric, booleans from the accepted words)."""

    type_: Literal["string", "integer", "decimal", "date", "datetime", "boolean"]

    library_metadata: ClassVar[dict] = _LIBRARY
    map_metric = "column_values.datarail_coerce_to_type"
    success_keys = ("type_", "mostly")
    args_keys = ("column", "type_")

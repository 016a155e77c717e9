"""Personal-data masking (个人信息脱敏).

Resident IDs, phone numbers, names, addresses and e-mail addresses must never appear
unmasked in logs, error messages, tickets or reports. Raw records stay inside the
warehouse (the quarantine table keeps them so the source unit's fix can be verified);
everything that leaves it goes through this module.

Rules (kept close to common practice in government systems):

| semantic | rule | example |
|---|---|---|
| resident_id | first 6 + ``*`` + last 4 | ``330102********123X`` |
| phone | first 3 + ``*`` + last 4 | ``138****5678`` |
| person_name | first character + ``*`` per remaining character | ``张*``, ``欧***`` |
| address | first 6 characters + ``***`` | ``浙江省杭州市***`` |
| email | first character of the local part + ``***@`` + domain | ``z***@example.gov.cn`` |

Values too short for the rule keep less (at least a third is always hidden). ``None`` (and
pandas' missing values) in, ``None`` out. :func:`scrub_text` finds resident IDs and mobile
numbers inside free text; :class:`MaskingFilter` applies it to log records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog.models import Resource

__all__ = ["mask_resident_id", "mask_phone", "mask_name", "mask_address", "mask_email", "mask_value",
           "mask_record", "scrub_text", "find_unmasked", "MaskingFilter", "install_masking_filter"]

# 17 digits + digit/X, not part of a longer alphanumeric token, shaped like a resident ID:
# a province digit 1-8 (codes 11-82) and a birth year 18xx-20xx with month/day-like digits.
# The shape keeps all-digit credit codes (91..., 92..., 12...) from being taken for IDs;
# IDs with a wrong check character or an impossible date are still caught.
_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])[1-8]\d{5}(?:18|19|20)\d{2}[01]\d[0-3]\d\d{3}[\dXx](?![0-9A-Za-z])",
                          re.ASCII)
# Mainland mobile: 11 digits, optionally written 3-4-4 with spaces or hyphens, optionally
# after a +86 / 86 prefix (which is why a preceding "86" does not block the match).
_MOBILE = re.compile(r"(?:(?<!\d)|(?<=86))1[3-9]\d(?:\d{8}|[- ]\d{4}[- ]\d{4})(?!\d)", re.ASCII)


def _missing(value: Any) -> bool:
    """None, NaN, pd.NA and NaT, without importing pandas."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _keep(text: str, head: int, tail: int) -> str:
    """Keep ``head`` leading and ``tail`` trailing characters and star the rest; for values
    shorter than the rule expects, shrink the kept parts until at least a third (and at
    least one character) is hidden."""
    n = len(text)
    must_hide = max(1, -(-n // 3))
    while n - head - tail < must_hide and (head or tail):
        if head >= tail and head:
            head -= 1
        else:
            tail -= 1
    return text[:head] + "*" * (n - head - tail) + (text[n - tail:] if tail else "")


def mask_resident_id(value: str | None) -> str | None:
    """``'330102199001011234'`` -> ``'330102********1234'`` (first 6, last 4)."""
    if _missing(value):
        return None
    return _keep(str(value), 6, 4)


def mask_phone(value: str | None) -> str | None:
    """``'13812345678'`` -> ``'138****5678'`` (first 3, last 4); landlines alike."""
    if _missing(value):
        return None
    return _keep(str(value), 3, 4)


def mask_name(value: str | None) -> str | None:
    """``'张三'`` -> ``'张*'``, ``'欧阳娜娜'`` -> ``'欧***'``; a one-character name -> ``'*'``."""
    if _missing(value):
        return None
    text = str(value)
    if len(text) <= 1:
        return "*" * len(text)
    return text[0] + "*" * (len(text) - 1)


def mask_address(value: str | None) -> str | None:
    """First 6 characters (province and city) + ``'***'``; shorter addresses keep half."""
    if _missing(value):
        return None
    text = str(value)
    keep = 6 if len(text) > 6 else len(text) // 2
    return text[:keep] + "***"


def mask_email(value: str | None) -> str | None:
    """``'zhangsan@example.gov.cn'`` -> ``'z***@example.gov.cn'``."""
    if _missing(value):
        return None
    text = str(value)
    local, at, domain = text.partition("@")
    if not at:
        return (text[:1] + "***") if text else text
    return f"{local[:1]}***@{domain}"


_MASKERS = {
    "resident_id": mask_resident_id,
    "phone": mask_phone,
    "person_name": mask_name,
    "address": mask_address,
    "email": mask_email,
}


def mask_value(semantic: str | None, value: Any) -> Any:
    """Mask ``value`` by its semantic type; values of non-personal types come back unchanged
    (``None``/missing -> ``None``)."""
    if _missing(value):
        return None
    fn = _MASKERS.get(semantic or "")
    return fn(value) if fn else value


def mask_record(resource: Resource, record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with every personal field of ``resource`` masked.

    Other string values are passed through :func:`scrub_text` too (a resident ID typed into
    a remarks column is still personal data), except USCC fields, which are company codes
    that can look like ID numbers. Missing values become ``None``.
    """
    semantics = {f.name: f.semantic for f in resource.fields}
    out: dict[str, Any] = {}
    for key, value in record.items():
        semantic = semantics.get(key)
        if _missing(value):
            out[key] = None
        elif semantic in _MASKERS:
            out[key] = mask_value(semantic, value)
        elif isinstance(value, str) and semantic != "uscc":
            out[key] = scrub_text(value)
        else:
            out[key] = value
    return out


def scrub_text(text: str | None) -> str | None:
    """Replace every resident ID (17 digits + digit/X, starting with a province digit 1-8
    and carrying a birth year 18xx-20xx) and every mainland mobile number in free text with
    its masked form."""
    if _missing(text):
        return None
    text = str(text)
    text = _RESIDENT_ID.sub(lambda m: mask_resident_id(m.group(0)), text)
    return _MOBILE.sub(lambda m: mask_phone(m.group(0)), text)


def find_unmasked(text: str | None) -> list[str]:
    """Every unmasked resident ID or mobile number in ``text`` (empty list when clean);
    tests use it to scan reports, logs and tickets."""
    if _missing(text):
        return []
    text = str(text)
    return _RESIDENT_ID.findall(text) + _MOBILE.findall(_RESIDENT_ID.sub("", text))


class MaskingFilter(logging.Filter):
    """A logging filter that scrubs resident IDs and mobile numbers from each record's
    message (after %-formatting its args) and from its formatted exception text.

    Attach it to handlers (filters on a logger do not see records propagated from child
    loggers): ``install_masking_filter()`` does that for the root logger's handlers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        record.msg = scrub_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True


def install_masking_filter(logger: logging.Logger | None = None) -> MaskingFilter:
    """Add one :class:`MaskingFilter` to every handler of ``logger`` (default: root) that
    does not have one yet; returns the filter."""
    logger = logger or logging.getLogger()
    flt = MaskingFilter()
    for handler in logger.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt

"""Great Expectations Data Docs for a source unit's validations of one run date.

Validation runs in the per-resource Airflow tasks; each writes GX's suite result, merged over
its chunks and with every unexpected value masked (``gx_result.json`` beside the staged
delivery, see :class:`quality.validate.ValidationOutcome`). The report step loads those
results into a GX validation-results store and lets GX's own ``SiteBuilder`` render them:
``index.html``, ``validations/...``, ``static/`` under the folder given, beside the unit's
HTML report. No GX result object holding raw values is ever rendered.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from datarail.privacy import scrub_text

log = logging.getLogger(__name__)


def build_data_docs(unit: str, results: list[dict], folder: Path, run_date: str) -> Path | None:
    """Render ``results`` (GX suite results as JSON dicts, masked) as Data Docs in ``folder``
    (replaced); returns its ``index.html`` or ``None`` when there is nothing to render."""
    if not results:
        return None
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from quality.validate import _GX_STATE, gx_batch_definition

    gx_batch_definition()  # the cached, quiet context
    ctx = _GX_STATE["context"]
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    site = f"datarail_{unit}"
    sites = ctx.get_site_names()
    if site in sites:
        ctx.delete_data_docs_site(site)
    ctx.add_data_docs_site(site_name=site, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    keys = []
    try:
        for res in results:
            # Belt and braces: the results were masked when written; scrub their text again.
            res = json.loads(scrub_text(json.dumps(res, ensure_ascii=False, default=str)))
            meta = res.get("meta") or {}
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=res["suite_name"]),
                run_id=RunIdentifier(run_name=run_date, run_time=f"{run_date}T00:00:00Z"),
                batch_identifier=str(meta.get("resource") or res["suite_name"]))
            ctx.validation_results_store.set(key, ExpectationSuiteValidationResult(**res))
            keys.append(key)
        built = ctx.build_data_docs(site_names=[site])
    finally:
        for key in keys:
            ctx.validation_results_store.remove_key(key)
        ctx.delete_data_docs_site(site)
    log.info("Data Docs for %s: %d validations -> %s", unit, len(keys), built.get(site))
    return folder / "index.html"


def load_results(paths: list[Path]) -> list[dict]:
    """The GX results (JSON) that exist among ``paths``."""
    out = []
    for p in paths:
        p = Path(p)
        if p.exists():
            out.append(json.loads(p.read_text(encoding="utf-8")))
    return out

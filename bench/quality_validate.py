"""Issue-5 benchmark: the full quality suite on the 1,000,000-row population resource.

Generates the benchmark's ``population`` rows in memory (``bench.population.block``, the same
seeded rows the extraction benchmark loads into MariaDB), stages them as the extractors would
(one text column per field, ``_row``, ``_source``), damages a small share of them so every
failure path runs (bad check characters, impossible birth dates, unknown division codes,
sex digit vs gender, duplicate keys, malformed phones), then times the validation
with every check the catalog entry implies (GB 11643 with the division reference, sex digit vs
gender, keys unique, the volume check against five earlier runs, freshness, ...).

Measured as the pipeline's validate step runs it (:func:`quality.validate.validate_staged`:
read the staged Parquet, run the suite, write passed / quarantined / failing-key Parquet), in
a fresh child process so the peak RSS is the whole process's (interpreter, pandas, Great
Expectations, the data): ``ru_maxrss`` at the end. The rows are staged by another child
first, as the extractors stage them (50,000-row row groups). The wall time covers the
validation only; ``import great_expectations`` and its context are built before the clock
starts (as in a warm worker). CPU seconds and the load average are reported too: the
machine may be shared.

    python -m bench.quality_validate            # 1M rows, merges into bench/results.json + RESULTS.md
    python -m bench.quality_validate --rows 200000 --no-write
    python -m bench.quality_validate --defects 0.12 --no-write   # a bad delivery

Results are merged into ``bench/results.json`` and a marked section of ``bench/RESULTS.md``
(read-modify-write: other benchmarks own the rest)
as ``quality.validate_1m_s`` and ``quality.validate_1m_peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource as _rusage
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results.json"
RUN_DATE = date(2026, 11, 22)
SEED = 20261122
DEFECT_SHARE = 0.02


def population_resource():
    """The benchmark's population resource (``bench.catalog``, the table the extraction
    benchmark loads) with the whole quality suite switched on: gender as a semantic field
    (sex digit vs gender), required key fields, the volume check on its deliveries."""
    from bench.catalog import FIELDS
    from bench.catalog import population_resource as base

    fields = [dict(f) for f in FIELDS]
    for f in fields:
        if f["name"] == "gender":
            f.update(semantic="gender", required=True)
        if f["name"] == "region_code":
            f["required"] = True
        if f["name"] == "birth_date":
            f["min"] = "1900-01-01"
    return base(fields=fields, quality={"volume": {"enabled": True}})


def staged_frame(rows: int, seed: int = SEED, defect_share: float = DEFECT_SHARE):
    """The staged delivery: text columns as the extractors write them, with defects."""
    import numpy as np
    import pandas as pd

    from bench.population import BLOCK, COLUMNS, block

    parts = []
    for start in range(1, rows + 1, BLOCK):
        cols = block(start, min(BLOCK, rows + 1 - start), seed)
        parts.append(pd.DataFrame({c: pd.Series(v, dtype="str") for c, v in zip(COLUMNS, cols, strict=True)}))
    frame = pd.concat(parts, ignore_index=True)
    rng = np.random.default_rng(seed)
    n = len(frame)
    k = int(n * defect_share) // 6
    picks = rng.choice(n, size=6 * k, replace=False).reshape(6, k) if k else [[]] * 6
    ids = frame["id_card"].to_numpy(dtype=object)
    ids[picks[0]] = [v[:-1] + ("0" if v[-1] != "0" else "1") for v in ids[picks[0]]]   # bad check char
    frame["id_card"] = pd.Series(ids, dtype="str")
    frame.loc[picks[1], "birth_date"] = "2019-02-30"                                      # impossible date
    frame.loc[picks[2], "region_code"] = "339999"                                          # unknown division
    frame.loc[picks[3], "gender"] = np.where(frame.loc[picks[3], "gender"] == "男", "女", "男")  # sex digit
    frame.loc[picks[4], "phone"] = "1381234567"                                            # warning only
    if k:
        frame.loc[picks[5], "id"] = frame.loc[(picks[5] + 1) % n, "id"].to_numpy()        # duplicate keys
    frame["_row"] = np.arange(1, n + 1, dtype="int64")
    frame["_source"] = "population"
    return frame


STAGE_ROWS = 50_000  # rows per Parquet row group, as the extractors' StagingWriter writes them


def stage(rows: int, folder: Path, defect_share: float = DEFECT_SHARE) -> list[str]:
    """Write the staged delivery as the extractors do (Parquet parts, one row group per chunk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-00000.parquet"
    pq.write_table(pa.Table.from_pandas(staged_frame(rows, defect_share=defect_share), preserve_index=False), path,
                   row_group_size=STAGE_ROWS)
    return [str(path)]


def measure(files: list[str], rows: int, out_dir: Path) -> dict:
    """Run one measurement in this process (call it in a fresh child): the pipeline's validate
    step on the staged Parquet (read, validate, write passed / quarantined / failures)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from quality.divisions import load_divisions
    from quality.suite import History
    from quality.validate import gx_batch_definition, validate_staged

    resource = population_resource()
    divisions = load_divisions()
    gx_batch_definition()
    before_mb = _rusage.getrusage(_rusage.RUSAGE_SELF).ru_maxrss / 1024
    history = History(previous_rows=[rows] * 5, previous_latest_update=None)
    t0, c0 = time.perf_counter(), time.process_time()
    outcome = validate_staged(resource, files, out_dir, run_date=RUN_DATE, divisions=divisions,
                              division_policy="historic", history=history)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = _rusage.getrusage(_rusage.RUSAGE_SELF).ru_maxrss
    return {"rows": rows, "validate_s": round(elapsed, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "rss_before_validate_mb": round(before_mb, 1), "passed": outcome.n_passed,
            "quarantined": outcome.n_quarantined, "checks": len(outcome.checks),
            "failing_checks": {c.check_id: c.failed for c in outcome.checks if c.failed},
            "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


RESULTS_MD = BENCH / "RESULTS.md"
_BEGIN, _END = "<!-- quality:begin -->", "<!-- quality:end -->"


def merge_results(result: dict) -> None:
    """Read-modify-write ``bench/results.json`` (only the ``quality.*`` keys change) and the
    quality section of ``bench/RESULTS.md`` (between its markers, appended if missing):
    the extraction harness (``bench.run``) owns the rest of both files."""
    data = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    data["quality.validate_1m_s"] = result["validate_s"]
    data["quality.validate_1m_peak_rss_mb"] = result["peak_rss_mb"]
    data["quality.validate_1m_detail"] = {k: v for k, v in result.items() if k not in ("validate_s", "peak_rss_mb")}
    RESULTS.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    section = render(result)
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    if _BEGIN in text and _END in text:
        text = text[:text.index(_BEGIN)] + section + text[text.index(_END) + len(_END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    RESULTS_MD.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def render(r: dict) -> str:
    """The quality section of RESULTS.md."""
    import datetime

    ok_t, ok_m = r["validate_s"] < 10, r["peak_rss_mb"] < 500
    checks = ", ".join(f"`{k}` {v:,}" for k, v in r["failing_checks"].items())
    return "\n".join([
        _BEGIN,
        "# Quality benchmark (`python -m bench.quality_validate`, issue 5)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} on {r['cpus']} cores, "
        f"load average {r['load_avg_1m']} during the run. The pipeline's validate step "
        "(`quality.validate.validate_staged`: staged Parquet in, passed / quarantined / failing-key Parquet out) "
        f"on the 1,000,000-row population resource with all {r['checks']} checks, ~2% damaged rows, in a fresh "
        "process; peak RSS is the whole process (GX and pandas imported: "
        f"{r['rss_before_validate_mb']} MB before the first row).",
        "",
        "| key | value | target |",
        "|---|---|---|",
        f"| `quality.validate_1m_s` | {r['validate_s']} s (CPU {r['cpu_s']} s) | < 10 s: {'met' if ok_t else 'MISSED'} |",
        f"| `quality.validate_1m_peak_rss_mb` | {r['peak_rss_mb']} MB | < 500 MB: {'met' if ok_m else 'MISSED'} |",
        "",
        f"Rows passed {r['passed']:,}, quarantined {r['quarantined']:,}; failing checks: {checks}.",
        _END,
    ])


def main(argv: list[str] | None = None) -> int:
    """Entry point: stage the rows in one child process, measure in another, print the
    result, merge it into results.json."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.quality_validate")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--defects", type=float, default=DEFECT_SHARE, help="share of damaged rows (default 0.02)")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/results.json")
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.rows, Path(args.stage), args.defects)))
        return 0
    if args.measure:
        folder = Path(args.measure)
        print(json.dumps(measure(sorted(str(p) for p in (folder / "raw").glob("*.parquet")), args.rows,
                                 folder / "validated")))
        return 0
    with tempfile.TemporaryDirectory(prefix="datarail_bench_quality_") as tmp:
        cmd = [sys.executable, "-m", "bench.quality_validate", "--rows", str(args.rows), "--defects", str(args.defects)]
        subprocess.run([*cmd, "--stage", str(Path(tmp) / "raw")], cwd=REPO, check=True, capture_output=True)
        out = subprocess.run([*cmd, "--measure", tmp], cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if args.rows == 1_000_000 and args.defects == DEFECT_SHARE and not args.no_write:
        merge_results(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

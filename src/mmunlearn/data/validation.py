"""Run the great-expectations suites in ``expectations/`` against a benchmark and report.

Each suite file is named after the flat table it checks (``items.json`` → ``quality_tables.items_table``).
The report (``metrics/data_quality.json``) carries figures for ``dvc metrics show`` and, for every
failed expectation, its suite, type, column and example rows. Any failed expectation of severity
"critical" fails the stage.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmunlearn.data.quality_tables import TABLES, suite_parameters
from mmunlearn.data.schema import Benchmark
from mmunlearn.errors import DataError

log = logging.getLogger(__name__)
EXAMPLE_COLUMNS = ("source", "profile_id", "role", "task", "modality", "question")


@dataclass(frozen=True)
class QualityReport:
    payload: dict[str, Any]

    @property
    def critical_failures(self) -> list[dict[str, Any]]:
        return [f for f in self.payload["failures"] if f["severity"] == "critical"]

    @property
    def passed(self) -> bool:
        return not self.critical_failures


def _uses_missing_parameter(kwargs: dict[str, Any], parameters: dict[str, Any]) -> bool:
    def refs(value: Any) -> list[str]:
        if isinstance(value, dict) and "$PARAMETER" in value:
            return [value["$PARAMETER"]]
        if isinstance(value, list):
            return [name for element in value for name in refs(element)]
        return []

    return any(parameters.get(name) is None for value in kwargs.values() for name in refs(value))


def load_suite_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Read every suite JSON; each must be named after a known table."""
    if not folder.is_dir():
        raise DataError(f"{folder}: expectations folder not found")
    suites = {}
    for path in sorted(folder.glob("*.json")):
        try:
            suite = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if path.stem not in TABLES:
            raise DataError(f"{path}: no table named {path.stem!r} to validate (known: {sorted(TABLES)})")
        if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
            raise DataError(f"{path}: field 'expectations' must be a list")
        suites[path.stem] = suite
    if not suites:
        raise DataError(f"{folder}: no expectation suites (*.json) found")
    return suites


def _example_rows(frame, indices: list[int], limit: int) -> list[dict[str, Any]]:
    columns = [c for c in EXAMPLE_COLUMNS if c in frame.columns]
    rows = frame.loc[[i for i in indices[:limit] if i in frame.index], columns]
    return json.loads(rows.to_json(orient="records"))


def _quiet_library_loggers(prefix: str) -> None:
    """A library that pins its own loggers at INFO speaks past the CLI's level: let them inherit it."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(logger, logging.Logger) and 0 < logger.level < logging.WARNING:
            logger.setLevel(logging.NOTSET)


def validate_benchmark(benchmark: Benchmark, suites_folder: Path, example_rows: int = 5) -> QualityReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow import: only when validating
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suites = load_suite_files(suites_folder)
    parameters = suite_parameters(benchmark)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_library_loggers("great_expectations")
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep stderr to our one line
    source = context.data_sources.add_pandas("benchmark")
    failures: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name, suite_json in suites.items():
        frame = TABLES[name](benchmark)
        active, skipped = [], []
        for entry in suite_json["expectations"]:
            if _uses_missing_parameter(entry.get("kwargs", {}), parameters):
                skipped.append(entry["type"])
                continue
            try:
                config = ExpectationConfiguration(type=entry["type"], kwargs=entry.get("kwargs", {}),
                                                  meta=entry.get("meta"))
                expectation = config.to_domain_obj()
                expectation.severity = entry.get("severity", "critical")
            except Exception as exc:
                raise DataError(f"{suites_folder / (name + '.json')}: bad expectation {entry.get('type')!r}: {exc}") from None
            active.append(expectation)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=active))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters,
                                result_format={"result_format": "COMPLETE"})
        failed = 0
        for outcome in result.results:
            if outcome.success:
                continue
            failed += 1
            kwargs = outcome.expectation_config.kwargs
            failures.append({
                "suite": name,
                "expectation": outcome.expectation_config.type,
                "column": kwargs.get("column") or f"{kwargs.get('column_A')}=={kwargs.get('column_B')}",
                "severity": str(getattr(outcome.expectation_config, "severity", "critical")).split(".")[-1].lower(),
                "why": (outcome.expectation_config.meta or {}).get("why", ""),
                "unexpected_count": int(outcome.result.get("unexpected_count") or 0),
                "error": (outcome.exception_info or {}).get("exception_message") if not outcome.result else None,
                "examples": _example_rows(frame, outcome.result.get("unexpected_index_list") or [], example_rows),
            })
        summary[name] = {"rows": len(frame), "expectations": len(active), "failed": failed, "skipped": len(skipped)}
        log.info("suite %s: %d rows, %d/%d expectations passed", name, len(frame), len(active) - failed, len(active))
    payload = {
        "passed": int(not any(f["severity"] == "critical" for f in failures)),
        "critical_failures": sum(f["severity"] == "critical" for f in failures),
        "warnings": sum(f["severity"] != "critical" for f in failures),
        "counts": {"profiles": len(benchmark.full), "celebrities": len(benchmark.celebrity),
                   "test_profiles": len(benchmark.test),
                   "qa_items": sum(len(p.items) for part in (benchmark.full, benchmark.celebrity, benchmark.test)
                                   for p in part)},
        "suites": summary,
        "failures": failures,
    }
    return QualityReport(payload)


def describe_failures(failures: list[dict[str, Any]]) -> str:
    """One line naming every failed expectation, with an example row for the first."""
    named = ", ".join(f"{f['suite']}: {f['expectation']}({f['column']}) on {f['unexpected_count']} row(s)"
                      for f in failures)
    example = failures[0]["examples"][0] if failures and failures[0]["examples"] else {}
    where = ", ".join(f"{k}={v}" for k, v in example.items() if k in ("source", "profile_id", "role", "task"))
    return f"{len(failures)} critical expectation(s) failed — {named}" + (f"; first e.g. {where}" if where else "")


DIGEST_KEY = "benchmark_digest"  # the report's record of which data it validated


def quality_report_path(metrics_dir: Path) -> Path:
    return Path(metrics_dir) / "data_quality.json"


def benchmark_digest(folder: Path) -> str:
    """Short, as it shows as a column in `dvc metrics show`: it tells data apart, it guards nothing."""
    from mmunlearn.journal import files_fingerprint

    return files_fingerprint(folder)[:16]


def require_validated(report_path: Path, benchmark_dir: Path) -> None:
    """Refuse data whose last validation failed; only warn about data never validated (a library user may
    split data they checked otherwise). A report of other data counts as none."""
    try:
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        report = None
    if not isinstance(report, dict) or report.get(DIGEST_KEY) != benchmark_digest(benchmark_dir):
        log.warning("%s has not been validated (`mmunlearn validate` checks it and writes %s)", benchmark_dir, report_path)
        return
    if not report.get("passed"):
        raise DataError(f"{benchmark_dir} failed validation ({report.get('critical_failures')} critical failure(s) "
                        f"in {report_path}): fix the data and run `mmunlearn validate` again")

"""Case files: JSONL and CSV golden-set files read into cases, every problem listed.

``cases_parse`` reads a whole file and checks every row: the variables against the declared ones
(``registry.variables``), the expectation (``evaluations.scoring.scorers.scorer_check``), flags,
locale and key; each problem carries the row's line and a JSON Pointer to the field (for CSV, the
column: ``/var.order_total``). Keys are generated when absent (see ``key_generated``).
``evaluations.datasets.services.dataset_import`` stores the result, all or nothing.

Pure module: no ORM, no models (the caps, key pattern and formats live here and the models
import them), so it is tested without a database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, BinaryIO

from django.conf import settings

from registry.errors import LocaleInvalid, Problem, Severity, VariablesInvalid
from registry.locales import locale_normalize
from registry.strictjson import NULL_CHARACTER, JSONRefused, strict_json_loads
from registry.variables import VariableSpec, VariableType, variables_validate

from ..scoring.scorers import scorer_check

# A golden set is 50-200 cases; the caps leave room and keep one import a short transaction.
MAX_IMPORT_CASES = 5_000

# Keys travel in reports, URLs and files: letters, digits and a few separators.
# ``\Z``, not ``$``: ``$`` also matches before a final newline (RegexValidator searches).
CASE_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*\Z"
CASE_KEY_MAX = 100

_CASE_KEY = re.compile(CASE_KEY_PATTERN)
_JSONL_FIELDS = frozenset({"key", "variables", "expectation", "holdout", "must_pass", "locale"})
_CSV_COLUMNS = frozenset({"key", "expectation", "holdout", "must_pass", "locale"})
_CSV_VARIABLE_PREFIX = "var."
_CSV_TRUE = frozenset({"true", "1", "yes"})
_CSV_FALSE = frozenset({"false", "0", "no", ""})


# --- values -----------------------------------------------------------------------------------


class ImportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class CaseData:
    """One parsed, valid row of a case file; ``line`` is where it starts in the file."""

    key: str
    variables: dict[str, Any]
    expectation: dict[str, Any]
    holdout: bool = False
    must_pass: bool = False
    locale: str = ""
    line: int | None = None
    generated_key: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            "variables": self.variables,
            "expectation": self.expectation,
            "holdout": self.holdout,
            "must_pass": self.must_pass,
            "locale": self.locale,
        }


# --- parsing --------------------------------------------------------------------------


def _json_loads(text: str) -> Any:
    """The API's strict parser (no NaN, infinities, unpaired surrogates, deep nesting: what
    PostgreSQL's jsonb or UTF-8 refuse). Its ``JSONRefused`` is a ``ValueError`` with ``msg`` and
    ``colno``, as ``json.JSONDecodeError`` is."""
    return strict_json_loads(text)


# The strict parser's codes for text PostgreSQL cannot store, as a case file's problems name them.
_STORABLE_CODES = {NULL_CHARACTER: "nul_character"}


def _refusal_problems(exc: JSONRefused) -> list[Problem]:
    """A line the strict parser refused: where each value that cannot be stored is, or why the
    line is not JSON (with its column, when it has one)."""
    if not exc.malformed:
        return [
            Problem(_STORABLE_CODES.get(e.code, e.code), e.detail, e.pointer) for e in exc.errors
        ]
    where = f" (column {exc.colno})" if exc.colno else ""
    return [Problem("invalid_json", f"Not valid JSON: {exc.msg.rstrip('.')}{where}.")]


def _nul_pointers(value: Any, pointer: str) -> Iterator[str]:
    """Pointers to strings (keys included) holding U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        if "\x00" in value:
            yield pointer
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_pointers(item, f"{pointer}/{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            token = str(key).replace("~", "~0").replace("/", "~1")
            if "\x00" in str(key):
                yield f"{pointer}/{token}"
            yield from _nul_pointers(item, f"{pointer}/{token}")


def _scorer_problems(expectation: Mapping[str, Any]) -> list[Problem]:
    """The scorer's own check of an expectation (``evaluations.scoring.scorers``, pure)."""
    problems = []
    for problem in scorer_check(expectation, pointer="/expectation"):
        if getattr(problem, "severity", Severity.ERROR) != Severity.ERROR:
            continue
        problems.append(Problem(problem.code, problem.detail, problem.pointer))
    return problems


def key_generated(variables: Mapping[str, Any], expectation: Mapping[str, Any], locale: str) -> str:
    """A key from what the case *is* (variables, expectation, locale), not from where it sits in
    the file, so re-importing a reordered or extended file keeps every case's key; the flags are
    left out, so marking a case holdout or must-pass keeps its key too."""
    canonical = json.dumps(
        {"variables": variables, "expectation": expectation, "locale": locale},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "case-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# An expectation cell whose JSON did not parse: reported once, not again as "not an object".
_UNPARSED = object()


@dataclass
class _Row:
    """A row as read from the file, before it is checked (``None``: the field was not given)."""

    line: int
    key: Any = None
    variables: Any = None
    expectation: Any = None
    holdout: Any = False
    must_pass: Any = False
    locale: Any = ""
    problems: list[Problem] = field(default_factory=list)
    # The row could not be read at all (bad JSON, not an object, wrong field count): its problems
    # are the only ones worth reporting, the fields it "lacks" are not.
    unreadable: bool = False


def _row_check(
    row: _Row, specs: Sequence[VariableSpec] | None
) -> tuple[CaseData | None, list[Problem]]:
    """Check one row; return the case (when valid) and its problems, each with the row's line."""
    if row.unreadable:
        return None, [Problem(p.code, p.detail, p.pointer, line=row.line) for p in row.problems]
    problems = list(row.problems)

    key = row.key
    if key is not None and key != "":
        if not isinstance(key, str):
            problems.append(Problem("invalid_key", "A case key must be text.", "/key"))
        elif len(key) > CASE_KEY_MAX or not _CASE_KEY.fullmatch(key):
            problems.append(
                Problem(
                    "invalid_key",
                    f"The key {key[:CASE_KEY_MAX]!r} must be at most {CASE_KEY_MAX} characters, "
                    "start with a letter or digit and use letters, digits, '.', '_', ':' and '-'.",
                    "/key",
                )
            )

    variables = row.variables
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        problems.append(
            Problem(
                "invalid_variables", "'variables' must be an object of name: value.", "/variables"
            )
        )
    else:
        problems += [
            Problem("nul_character", "Text cannot contain the NUL character (U+0000).", at)
            for at in _nul_pointers(variables, "/variables")
        ]
        if specs is not None:
            try:
                variables_validate(
                    specs,
                    variables,
                    max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
                    max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
                )
            except VariablesInvalid as exc:
                problems += exc.problems

    expectation = row.expectation
    if expectation is _UNPARSED:
        pass  # its JSON problem is reported already
    elif expectation is None:
        problems.append(
            Problem(
                "missing_expectation",
                'A case needs an expectation, e.g. {"scorer": "contains", "value": "refund"}.',
                "/expectation",
            )
        )
    elif not isinstance(expectation, dict):
        problems.append(
            Problem("invalid_expectation", "The expectation must be a JSON object.", "/expectation")
        )
    elif not isinstance(expectation.get("scorer"), str) or not expectation["scorer"]:
        problems.append(
            Problem(
                "invalid_expectation",
                'The expectation must name its scorer as text, e.g. "scorer": "contains".',
                "/expectation/scorer",
            )
        )
    else:
        nuls = list(_nul_pointers(expectation, "/expectation"))
        problems += [
            Problem("nul_character", "Text cannot contain the NUL character (U+0000).", at)
            for at in nuls
        ]
        if not nuls:
            problems += _scorer_problems(expectation)

    for name in ("holdout", "must_pass"):
        if not isinstance(getattr(row, name), bool):
            problems.append(Problem("invalid_flag", f"'{name}' must be true or false.", f"/{name}"))

    locale = row.locale if row.locale is not None else ""
    if not isinstance(locale, str):
        problems.append(
            Problem("invalid_locale", "The locale must be a BCP 47 tag as text.", "/locale")
        )
    elif locale:
        try:
            locale = locale_normalize(locale)
        except LocaleInvalid as exc:
            problems.append(Problem("invalid_locale", exc.message, "/locale"))

    problems = [Problem(p.code, p.detail, p.pointer, line=row.line) for p in problems]
    if problems:
        return None, problems
    generated = key is None or key == ""
    return (
        CaseData(
            key=key_generated(variables, expectation, locale) if generated else key,
            variables=variables,
            expectation=expectation,
            holdout=row.holdout,
            must_pass=row.must_pass,
            locale=locale,
            line=row.line,
            generated_key=generated,
        ),
        [],
    )


def _jsonl_rows(text: str) -> Iterator[_Row]:
    """One case per line; blank lines are skipped (a trailing newline is not a case)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = _json_loads(line)
        except JSONRefused as exc:
            yield _Row(line=number, unreadable=True, problems=_refusal_problems(exc))
            continue
        if not isinstance(data, dict):
            yield _Row(
                line=number,
                unreadable=True,
                problems=[Problem("not_an_object", "Each line must be one JSON object: a case.")],
            )
            continue
        yield _object_row(data, line=number)


def _object_row(data: Mapping[str, Any], *, line: int) -> _Row:
    """A case given as a JSON object (a JSONL line, or one case edited in the admin)."""
    row = _Row(
        line=line,
        key=data.get("key"),
        variables=data.get("variables"),
        expectation=data.get("expectation"),
        holdout=data.get("holdout", False),
        must_pass=data.get("must_pass", False),
        locale=data.get("locale", ""),
    )
    for name in data:
        if name not in _JSONL_FIELDS:
            row.problems.append(
                Problem(
                    "unknown_field",
                    f"'{name}' is not a case field; use {', '.join(sorted(_JSONL_FIELDS))}.",
                    f"/{name}",
                )
            )
    return row


def case_check(
    *, data: Mapping[str, Any], specs: Sequence[VariableSpec] | None
) -> tuple[CaseData | None, list[Problem]]:
    """One case, given as a JSONL line's object (``key``, ``variables``, ``expectation``,
    ``holdout``, ``must_pass``, ``locale``), checked exactly as an imported row is: the same
    checks, the same problems (without a line). ``specs`` as for ``cases_parse``."""
    case, problems = _row_check(_object_row(data, line=0), specs)
    return case, [replace(p, line=None) for p in problems]


def _csv_flag(text: str) -> bool | str:
    lowered = text.strip().lower()
    if lowered in _CSV_TRUE:
        return True
    if lowered in _CSV_FALSE:
        return False
    return text  # not a boolean: the row check reports it


def _csv_variable(text: str, spec: VariableSpec | None) -> Any:
    """A ``var.<name>`` cell: as written for a string variable (so "42" stays text), parsed as
    JSON for any other type (``42``, ``true``, ``[1, 2]``), and left as text when it does not
    parse, so the variable check says what was expected."""
    if spec is not None and spec.type == VariableType.STRING:
        return text
    try:
        return _json_loads(text)
    except ValueError:
        return text


def _csv_rows(text: str, specs: Sequence[VariableSpec] | None) -> Iterator[_Row]:
    """A header, then one case per record. Empty cells are absent values: an empty ``var.x`` is a
    variable left out, an empty ``key`` is a generated key, empty flags are false."""
    declared = {spec.name: spec for spec in specs or ()}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield _Row(
            line=1, unreadable=True, problems=[Problem("invalid_csv", f"Not valid CSV: {exc}.")]
        )
        return
    if header is None:
        return
    header_problems = []
    seen: set[str] = set()
    for column in header:
        if column in seen:
            header_problems.append(
                Problem("duplicate_column", f"The column '{column}' appears twice.", f"/{column}")
            )
        seen.add(column)
        if column.startswith(_CSV_VARIABLE_PREFIX):
            if not column[len(_CSV_VARIABLE_PREFIX) :]:
                header_problems.append(
                    Problem(
                        "unknown_column",
                        "A variable column needs a name: var.<name>.",
                        f"/{column}",
                    )
                )
        elif column not in _CSV_COLUMNS:
            header_problems.append(
                Problem(
                    "unknown_column",
                    f"'{column}' is not a case column; use {', '.join(sorted(_CSV_COLUMNS))} "
                    "and var.<name> for each variable.",
                    f"/{column}",
                )
            )
    if "expectation" not in header:
        header_problems.append(
            Problem("missing_column", "The header needs an 'expectation' column.", "/expectation")
        )
    if header_problems:
        yield _Row(line=1, unreadable=True, problems=header_problems)
        return

    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _Row(
                line=line,
                unreadable=True,
                problems=[Problem("invalid_csv", f"Not valid CSV: {exc}.")],
            )
            return
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        row = _Row(line=start)
        if len(record) != len(header):
            row.unreadable = True
            row.problems.append(
                Problem(
                    "wrong_field_count",
                    f"The row has {len(record)} fields; the header has {len(header)}.",
                )
            )
            yield row
            continue
        variables: dict[str, Any] = {}
        for column, cell in zip(header, record, strict=True):
            if column.startswith(_CSV_VARIABLE_PREFIX):
                if cell != "":
                    name = column[len(_CSV_VARIABLE_PREFIX) :]
                    variables[name] = _csv_variable(cell, declared.get(name))
            elif column == "expectation":
                if cell.strip():
                    try:
                        row.expectation = _json_loads(cell)
                    except ValueError as exc:
                        detail = getattr(exc, "msg", str(exc))
                        row.expectation = _UNPARSED
                        row.problems.append(
                            Problem(
                                "invalid_json",
                                f"The expectation is not valid JSON: {detail}.",
                                "/expectation",
                            )
                        )
            elif column in ("holdout", "must_pass"):
                setattr(row, column, _csv_flag(cell))
            else:
                setattr(row, column, cell)
        row.variables = variables
        yield row


def _csv_pointer(pointer: str) -> str:
    """Name the CSV column a problem is about: ``/variables/tone`` is the ``var.tone`` column."""
    if pointer.startswith("/variables/"):
        return "/" + _CSV_VARIABLE_PREFIX + pointer[len("/variables/") :]
    return pointer


def file_too_large(size: int, *, at_least: bool = False) -> Problem:
    """The refusal of a case file of ``size`` bytes (``at_least``: the reader stopped there)."""
    limit = settings.DATASET_FILE_MAX_BYTES
    shown = f"over {limit:,}" if at_least else f"{size:,}"
    return Problem(
        "file_too_large",
        f"The file is {shown} bytes; an import takes at most {limit:,} (DATASET_FILE_MAX_BYTES). "
        "Split it into several datasets.",
    )


def case_file_read(file: BinaryIO) -> bytes:
    """At most ``DATASET_FILE_MAX_BYTES`` + 1 bytes of ``file``: enough for ``cases_parse`` to
    refuse a larger one, never the whole of it in memory."""
    return file.read(settings.DATASET_FILE_MAX_BYTES + 1)


def cases_parse(
    *, content: str | bytes, format: ImportFormat | str, specs: Sequence[VariableSpec] | None
) -> tuple[list[CaseData], list[Problem]]:
    """Every valid case and every problem of a case file (the file is refused if any).

    ``specs`` are the declared variables the cases are checked against; ``None`` skips that
    check (the caller reports why there are none).
    """
    try:
        kind = ImportFormat(format)
    except ValueError:
        choices = ", ".join(f.value for f in ImportFormat)
        return [], [
            Problem(
                "invalid_format", f"The format must be one of {choices}, not {format!r}.", "/format"
            )
        ]
    raw = content.encode("utf-8") if isinstance(content, str) else content
    if len(raw) > settings.DATASET_FILE_MAX_BYTES:
        return [], [file_too_large(len(raw))]
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's CSV often starts with a BOM
    except UnicodeDecodeError as exc:
        return [], [Problem("not_utf8", f"The file is not UTF-8 text (byte {exc.start}).")]

    problems: list[Problem] = []
    rows = _jsonl_rows(text) if kind is ImportFormat.JSONL else _csv_rows(text, specs)
    cases: list[CaseData] = []
    count = 0
    for row in rows:
        count += 1
        if count > MAX_IMPORT_CASES:
            return [], [
                Problem(
                    "too_many_cases",
                    f"The file has more than {MAX_IMPORT_CASES:,} cases (line {row.line} is "
                    f"case {count:,}); split it into several datasets.",
                    line=row.line,
                )
            ]
        case, row_problems = _row_check(row, specs)
        if kind is ImportFormat.CSV:
            row_problems = [
                Problem(p.code, p.detail, _csv_pointer(p.pointer), line=p.line)
                for p in row_problems
            ]
        problems += row_problems
        if case is not None:
            cases.append(case)
    if count == 0:
        problems.append(Problem("no_cases", "The file holds no cases."))

    first_line: dict[str, int | None] = {}
    for case in cases:
        if case.key in first_line:
            again = (
                "the same variables, expectation and locale as"
                if case.generated_key
                else "the same key as"
            )
            problems.append(
                Problem(
                    "duplicate_key",
                    f"The case {case.key!r} has {again} line {first_line[case.key]}.",
                    "/key",
                    line=case.line,
                )
            )
        else:
            first_line[case.key] = case.line
    return cases, problems

"""Golden datasets: creating them, importing cases from JSONL and CSV (all or nothing, every problem
with its line), replace, caps, holdout flags, and ``manage.py dataset import``.

The ``released`` prompt (tests/conftest.py) declares ``customer_name`` (string, required) and
``order_total`` (number, optional) in every committed version.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from evaluations.datasets import casefiles
from evaluations.datasets.selectors import DatasetNotFound, dataset_cases, dataset_get, dataset_list
from evaluations.datasets.services import (
    CasesInvalid,
    DatasetExists,
    DatasetInvalid,
    ImportFormat,
    dataset_create,
    dataset_import,
)
from evaluations.models import Case, Dataset
from registry.actors import Actor
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db

ACTOR = Actor(label="tests")


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def case(name: str = "Ada", **extra) -> dict:
    row = {
        "variables": {"customer_name": name},
        "expectation": {"scorer": "contains", "value": name},
    }
    row.update(extra)
    return row


@pytest.fixture
def dataset(released) -> Dataset:
    return dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)


def problems_of(exc: pytest.ExceptionInfo[CasesInvalid]) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.code, p.pointer) for p in exc.value.problems]


# --- datasets ---------------------------------------------------------------------------------


def test_a_dataset_name_is_unique_per_prompt(released):
    dataset_create(prompt=released.prompt, name="golden", actor=ACTOR, description="Real tickets.")
    with pytest.raises(DatasetExists):
        dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    other = PromptFactory()
    assert dataset_create(prompt=other, name="golden", actor=ACTOR).name == "golden"


@pytest.mark.parametrize("name", ["", "Golden", "has space", "x" * 101, "-lead"])
def test_it_refuses_a_bad_dataset_name(released, name):
    with pytest.raises(DatasetInvalid) as exc:
        dataset_create(prompt=released.prompt, name=name, actor=ACTOR)
    assert [p.pointer for p in exc.value.problems] == ["/name"]
    assert not Dataset.objects.exists()


def test_dataset_get_names_a_missing_dataset(released):
    with pytest.raises(DatasetNotFound, match="no dataset named 'nope'"):
        dataset_get(prompt=released.prompt, name="nope")


# --- JSONL ------------------------------------------------------------------------------------


def test_it_imports_jsonl_cases_in_file_order(dataset):
    content = jsonl(
        case("Ada", key="ada"),
        case("Bob", holdout=True),
        {
            **case("Cy", must_pass=True, locale="fr_ca"),
            "variables": {"customer_name": "Cy", "order_total": 12.5},
        },
    )
    result = dataset_import(dataset=dataset, content=content, format="jsonl", actor=ACTOR)

    assert result.created == [c.key for c in result.cases]
    assert len(result.created) == 3
    rows = list(dataset_cases(dataset, include_holdout=True))
    assert next(r.key for r in rows) == "ada"
    assert [r.variables["customer_name"] for r in rows] == ["Ada", "Bob", "Cy"]
    assert rows[1].holdout
    assert not rows[1].must_pass
    assert rows[2].must_pass
    assert rows[2].locale == "fr-CA"
    assert rows[2].variables["order_total"] == 12.5
    assert rows[0].expectation == {"scorer": "contains", "value": "Ada"}


def test_generated_keys_are_stable_hashes_of_the_case(dataset, released):
    first = dataset_import(dataset=dataset, content=jsonl(case("Bob")), format="jsonl")
    key = first.cases[0].key
    assert first.cases[0].generated_key
    assert key.startswith("case-")
    # The same case, flagged differently and in another dataset, gets the same key.
    other = dataset_create(prompt=released.prompt, name="other", actor=ACTOR)
    again = dataset_import(
        dataset=other, content=jsonl(case("Ada"), case("Bob", holdout=True)), format="jsonl"
    )
    assert again.cases[1].key == key
    assert again.cases[0].key != key


def test_holdout_cases_are_left_out_of_iteration_runs(dataset):
    dataset_import(
        dataset=dataset,
        content=jsonl(
            case("Ada", key="a"), case("Bob", key="b", holdout=True), case("Cy", key="c")
        ),
        format="jsonl",
    )
    assert [c.key for c in dataset_cases(dataset, include_holdout=False)] == ["a", "c"]
    assert [c.key for c in dataset_cases(dataset, include_holdout=True)] == ["a", "b", "c"]
    listed = dataset_list(prompt=dataset.prompt).get()
    assert (listed.case_count, listed.holdout_count, listed.must_pass_count) == (3, 1, 0)


def test_case_files_go_through_the_strict_parser(dataset):
    """Issue 12, finding 5: values PostgreSQL or UTF-8 cannot hold, and numbers that overflow,
    are refused with their line and pointer, as the API refuses them."""
    expectation = '"expectation": {"scorer": "exact", "value": "x"}'
    content = "\n".join(
        [
            '{"variables": {"customer_name": "\\ud800"}, ' + expectation + "}",  # 1
            '{"variables": {"customer_name": "x", "order_total": 1e400}, ' + expectation + "}",
            '{"variables": {"customer_name": "x"}, "expectation": {"scorer": "exact", '
            '"value": "\\u0000"}}',  # 3
        ]
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="jsonl")

    assert problems_of(exc) == [
        (1, "lone_surrogates_not_allowed", "/variables/customer_name"),
        (2, "invalid_json", ""),
        (3, "nul_character", "/expectation/value"),
    ]
    assert "too large" in exc.value.problems[1].detail
    assert not Case.objects.exists()


def test_every_jsonl_problem_is_listed_with_its_line_and_nothing_is_stored(dataset):
    content = "\n".join(
        [
            json.dumps(case("Ada", key="ok")),  # 1: valid
            "{not json",  # 2
            "[1, 2]",  # 3
            json.dumps(
                {
                    "variables": {"customer_nam": "x"},
                    "expectation": {"scorer": "exact", "value": "x"},
                }
            ),  # 4
            json.dumps(
                {
                    "variables": {"customer_name": 7},
                    "expectation": {"scorer": "exact", "value": "x"},
                }
            ),  # 5
            json.dumps({"variables": {"customer_name": "x"}}),  # 6
            json.dumps({"variables": {"customer_name": "x"}, "expectation": {"value": 1}}),  # 7
            json.dumps({"variables": {"customer_name": "x"}, "expectation": "contains"}),  # 8
            json.dumps({**case("x"), "holdout": "yes", "must_pass": 1}),  # 9
            json.dumps({**case("x"), "locale": "not a locale"}),  # 10
            json.dumps({**case("x"), "key": "bad key!"}),  # 11
            json.dumps({**case("x"), "color": "red"}),  # 12
            json.dumps({**case("Ada", key="ok")}),  # 13: duplicate key
            "",  # blank lines are skipped
            json.dumps({"variables": [], "expectation": {"scorer": "exact", "value": "x"}}),  # 15
            json.dumps(
                {
                    "variables": {"customer_name": "a\u0000b"},
                    "expectation": {"scorer": "exact", "value": "x"},
                }
            ),  # 16
            '{"variables": {"customer_name": "x", "order_total": NaN}, "expectation": {"scorer": "exact", "value": "x"}}',  # 17
        ]
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="jsonl")

    assert problems_of(exc) == [
        (2, "invalid_json", ""),
        (3, "not_an_object", ""),
        (4, "unknown_variable", "/variables/customer_nam"),
        (4, "missing_variable", "/variables/customer_name"),
        (5, "wrong_type", "/variables/customer_name"),
        (6, "missing_expectation", "/expectation"),
        (7, "invalid_expectation", "/expectation/scorer"),
        (8, "invalid_expectation", "/expectation"),
        (9, "invalid_flag", "/holdout"),
        (9, "invalid_flag", "/must_pass"),
        (10, "invalid_locale", "/locale"),
        (11, "invalid_key", "/key"),
        (12, "unknown_field", "/color"),
        (15, "invalid_variables", "/variables"),
        (16, "nul_character", "/variables/customer_name"),
        (17, "invalid_json", ""),
        (13, "duplicate_key", "/key"),
    ]
    assert "did you mean 'customer_name'" in exc.value.problems[2].detail
    assert "line 1" in exc.value.problems[-1].detail
    assert not Case.objects.exists()


def test_a_prompt_without_a_committed_version_takes_no_cases(db):
    prompt = PromptFactory()
    make_version(prompt, commit=False)
    dataset = dataset_create(prompt=prompt, name="golden", actor=ACTOR)
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=jsonl(case()), format="jsonl")
    assert [p.code for p in exc.value.problems] == ["no_committed_version"]


def test_variables_are_checked_against_the_latest_committed_version(released, dataset):
    make_version(
        released.prompt,
        message="v4 renames the variable",
        variables=[{"name": "name", "type": "string", "required": True}],
        templates={"en": {"instruction": "Hi {{ name }}."}},
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=jsonl(case("Ada")), format="jsonl")
    assert {p.code for p in exc.value.problems} == {"unknown_variable", "missing_variable"}
    row = {"variables": {"name": "Ada"}, "expectation": {"scorer": "exact", "value": "Hi Ada."}}
    assert dataset_import(dataset=dataset, content=jsonl(row), format="jsonl").created


def test_an_empty_file_is_refused(dataset):
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content="\n\n", format="jsonl")
    assert [p.code for p in exc.value.problems] == ["no_cases"]


def test_a_file_that_is_not_utf8_is_refused(dataset):
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=b"\xff\xfe{}", format="jsonl")
    assert [p.code for p in exc.value.problems] == ["not_utf8"]


def test_an_unknown_format_is_refused(dataset):
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=jsonl(case()), format="yaml")
    assert [(p.code, p.pointer) for p in exc.value.problems] == [("invalid_format", "/format")]


# --- caps -------------------------------------------------------------------------------------


def test_too_many_cases_are_refused_with_the_line_past_the_cap(dataset, monkeypatch):
    monkeypatch.setattr(casefiles, "MAX_IMPORT_CASES", 3)
    rows = [case(f"n{i}") for i in range(4)]
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=jsonl(*rows), format="jsonl")
    assert problems_of(exc) == [(4, "too_many_cases", "")]
    assert dataset_import(dataset=dataset, content=jsonl(*rows[:3]), format="jsonl").created


@override_settings(DATASET_FILE_MAX_BYTES=1024)
def test_a_file_over_the_size_cap_is_refused_before_it_is_read(dataset):
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content="x" * 1025, format="jsonl")
    assert [p.code for p in exc.value.problems] == ["file_too_large"]
    assert "at most 1,024" in exc.value.problems[0].detail


# --- append and replace -----------------------------------------------------------------------


def test_an_import_adds_after_the_existing_cases_and_refuses_a_known_key(dataset):
    dataset_import(dataset=dataset, content=jsonl(case("Ada", key="a")), format="jsonl")
    dataset_import(dataset=dataset, content=jsonl(case("Bob", key="b")), format="jsonl")
    assert [c.key for c in dataset_cases(dataset, include_holdout=True)] == ["a", "b"]

    content = jsonl(case("Cy", key="c"), case("Ada again", key="a"))
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="jsonl")
    assert problems_of(exc) == [(2, "key_exists", "/key")]
    assert not Case.objects.filter(key="c").exists()  # all or nothing


def test_replace_keeps_known_keys_updates_them_and_removes_the_rest(dataset):
    dataset_import(
        dataset=dataset,
        content=jsonl(case("Ada", key="a"), case("Bob", key="b"), case("Cy", key="c")),
        format="jsonl",
    )
    kept = Case.objects.get(key="a").pk
    result = dataset_import(
        dataset=dataset,
        content=jsonl(
            case("New", key="n"), case("Ada", key="a", must_pass=True), case("Cy", key="c")
        ),
        format="jsonl",
        replace=True,
    )
    assert (result.created, result.updated, result.unchanged, result.removed) == (
        ["n"],
        ["a"],
        ["c"],
        ["b"],
    )
    rows = list(dataset_cases(dataset, include_holdout=True))
    assert [r.key for r in rows] == ["n", "a", "c"]
    assert rows[1].pk == kept
    assert rows[1].must_pass


def test_a_refused_replace_changes_nothing(dataset):
    dataset_import(dataset=dataset, content=jsonl(case("Ada", key="a")), format="jsonl")
    with pytest.raises(CasesInvalid):
        dataset_import(
            dataset=dataset,
            content=jsonl(case("B", key="b"), {"bad": 1}),
            format="jsonl",
            replace=True,
        )
    assert [c.key for c in Case.objects.all()] == ["a"]


def test_a_dry_run_reports_and_stores_nothing(dataset):
    dataset_import(dataset=dataset, content=jsonl(case("Ada", key="a")), format="jsonl")
    result = dataset_import(
        dataset=dataset,
        content=jsonl(case("Bob", key="b")),
        format="jsonl",
        replace=True,
        dry_run=True,
    )
    assert result.dry_run
    assert (result.created, result.removed) == (["b"], ["a"])
    assert "Would import 1 case(s)" in result.describe()
    assert [c.key for c in Case.objects.all()] == ["a"]


def test_an_unsaved_dataset_is_created_by_its_import_and_not_by_a_dry_run(released):
    fresh = Dataset(prompt=released.prompt, name="fresh")
    dataset_import(dataset=fresh, content=jsonl(case()), format="jsonl", dry_run=True)
    assert not Dataset.objects.filter(name="fresh").exists()
    dataset_import(dataset=fresh, content=jsonl(case()), format="jsonl", actor=ACTOR)
    assert dataset_get(prompt=released.prompt, name="fresh").cases.count() == 1


def test_a_dry_run_into_a_new_dataset_checks_its_name(released):
    with pytest.raises(DatasetInvalid):
        dataset_import(
            dataset=Dataset(prompt=released.prompt, name="Bad Name"),
            content=jsonl(case()),
            format="jsonl",
            dry_run=True,
        )


def test_a_refused_import_does_not_create_its_dataset(released):
    fresh = Dataset(prompt=released.prompt, name="fresh")
    with pytest.raises(CasesInvalid):
        dataset_import(dataset=fresh, content="{", format="jsonl")
    assert not Dataset.objects.filter(name="fresh").exists()


# --- CSV --------------------------------------------------------------------------------------


CSV_OK = (
    "key,var.customer_name,var.order_total,expectation,holdout,must_pass,locale\n"
    'a,Ada,12.5,"{""scorer"": ""contains"", ""value"": ""Ada""}",false,true,fr\n'
    ',42,,"{""scorer"": ""exact"", ""value"": ""Hi""}",yes,,\n'
    "\n"
    'c,"Multi\nline",3,"{""scorer"": ""regex"", ""pattern"": ""^Hi""}",0,1,\n'
)


def test_it_imports_csv_with_typed_variables_and_flags(dataset):
    result = dataset_import(dataset=dataset, content=CSV_OK, format=ImportFormat.CSV)
    rows = list(dataset_cases(dataset, include_holdout=True))
    assert [r.key for r in rows] == ["a", result.cases[1].key, "c"]
    assert [c.line for c in result.cases] == [2, 3, 5]
    # A string variable stays text ("42"), a number variable is parsed; an empty cell is left out.
    assert rows[0].variables == {"customer_name": "Ada", "order_total": 12.5}
    assert rows[1].variables == {"customer_name": "42"}
    assert rows[2].variables == {"customer_name": "Multi\nline", "order_total": 3}
    assert [(r.holdout, r.must_pass, r.locale) for r in rows] == [
        (False, True, "fr"),
        (True, False, ""),
        (False, True, ""),
    ]
    assert rows[2].expectation == {"scorer": "regex", "pattern": "^Hi"}


def test_a_csv_with_a_bom_from_a_spreadsheet_imports(dataset):
    content = (
        '\ufeffvar.customer_name,expectation\nAda,"{""scorer"": ""exact"", ""value"": ""x""}"\n'
    )
    assert dataset_import(dataset=dataset, content=content.encode(), format="csv").created


def test_every_csv_problem_is_listed_with_its_line_and_column(dataset):
    content = (
        "key,var.customer_name,var.order_total,expectation,holdout\n"
        'a,Ada,lots,"{""scorer"": ""exact"", ""value"": ""x""}",maybe\n'  # 2: order_total not a number, bad flag
        'b,,,"{not json",\n'  # 3: missing name, bad JSON
        "c,Cy\n"  # 4: too few fields
        'd,"Dee",1,"{""value"": 1}",\n'  # 5: no scorer
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="csv")
    assert problems_of(exc) == [
        (2, "wrong_type", "/var.order_total"),
        (2, "invalid_flag", "/holdout"),
        (3, "invalid_json", "/expectation"),
        (3, "missing_variable", "/var.customer_name"),
        (4, "wrong_field_count", ""),
        (5, "invalid_expectation", "/expectation/scorer"),
    ]
    assert not Case.objects.exists()


def test_a_csv_header_is_checked_before_any_row(dataset):
    content = "key,name,var.,key,var.customer_name\nx,y,z,w,v\n"
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="csv")
    assert problems_of(exc) == [
        (1, "unknown_column", "/name"),
        (1, "unknown_column", "/var."),
        (1, "duplicate_column", "/key"),
        (1, "missing_column", "/expectation"),
    ]


def test_a_broken_csv_quote_is_reported_at_its_line(dataset):
    content = 'var.customer_name,expectation\nAda,"{""scorer"": ""exact"", ""value"": ""x""}"\nBob,"a"b"\n'
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="csv")
    assert [(p.line, p.code) for p in exc.value.problems] == [(3, "invalid_csv")]


# --- the scorers' own check -------------------------------------------------------------------


def test_each_expectation_is_checked_by_its_scorer(dataset):
    content = jsonl(
        case("Ada"),
        {**case("Bob"), "expectation": {"scorer": "nope"}},
        {**case("Cy"), "expectation": {"scorer": "regex", "pattern": "(a+)+$"}},
        {**case("Dee"), "expectation": {"scorer": "contains", "value": "x", "colour": 1}},
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="jsonl")
    assert problems_of(exc) == [
        (2, "unknown_scorer", "/expectation/scorer"),
        (3, "unsafe_regex", "/expectation/pattern"),
        (4, "unknown_field", "/expectation/colour"),
    ]


def test_a_json_schema_expectation_naming_a_file_or_url_is_refused(dataset, recorder, secret_file):
    # Issue 12, finding 2: refused at import, at the reference's pointer; nothing is fetched.
    def schema_case(name: str, schema: dict) -> dict:
        return {**case(name), "expectation": {"scorer": "json_schema", "schema": schema}}

    content = jsonl(
        schema_case("Ada", {"$ref": secret_file.as_uri()}),
        schema_case("Bob", {"properties": {"a": {"$ref": f"{recorder.url}/a.json"}}}),
        schema_case("Cy", {"patternProperties": {"(a|ab)*$": {}}}),
        schema_case("Dee", {"$defs": {"a": {"type": "string"}}, "items": {"$ref": "#/$defs/a"}}),
    )
    with pytest.raises(CasesInvalid) as exc:
        dataset_import(dataset=dataset, content=content, format="jsonl")
    assert problems_of(exc) == [
        (1, "schema_reference_refused", "/expectation/schema/$ref"),
        (2, "schema_reference_refused", "/expectation/schema/properties/a/$ref"),
        (3, "unsafe_regex", "/expectation/schema/patternProperties/(a|ab)*$"),
    ]
    assert recorder.hits == []
    assert not dataset.cases.exists()


# --- the command ------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_command_imports_into_a_new_dataset(released, tmp_path):
    path = write(tmp_path, "golden.jsonl", jsonl(case("Ada", key="a"), case("Bob", holdout=True)))
    out = StringIO()
    call_command("dataset", "import", "support.refund-reply", "golden", str(path), stdout=out)
    assert "Imported 2 case(s)" in out.getvalue()
    dataset = dataset_get(prompt=released.prompt, name="golden")
    assert dataset.created_by_label == "import"
    assert dataset_cases(dataset, include_holdout=False).count() == 1


def test_the_command_dry_run_stores_nothing(released, tmp_path):
    path = write(tmp_path, "cases.csv", CSV_OK)
    out = StringIO()
    call_command(
        "dataset", "import", "support.refund-reply", "golden", str(path), "--dry-run", stdout=out
    )
    assert "Would import 3 case(s)" in out.getvalue()
    assert "nothing was stored" in out.getvalue()
    assert not Dataset.objects.exists()


def test_the_command_replaces(dataset, tmp_path):
    dataset_import(dataset=dataset, content=jsonl(case("Ada", key="a")), format="jsonl")
    path = write(tmp_path, "cases.txt", jsonl(case("Bob", key="b")))
    call_command(
        "dataset",
        "import",
        "support.refund-reply",
        "golden",
        str(path),
        "--format",
        "jsonl",
        "--replace",
        stdout=StringIO(),
    )
    assert [c.key for c in Case.objects.all()] == ["b"]


def test_the_command_prints_every_problem_with_file_and_line(released, tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(case()) + "{oops\n" + json.dumps({"x": 1}) + "\n")
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was stored"):
        call_command("dataset", "import", "support.refund-reply", "golden", str(path), stderr=err)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith(f"{path}:2: Not valid JSON")
    assert any(line.startswith(f"{path}:3: 'x' is not a case field") for line in lines)
    assert not Dataset.objects.exists()


def test_the_command_names_an_unknown_prompt_an_unknown_format_and_a_missing_file(db, tmp_path):
    path = write(tmp_path, "cases.jsonl", jsonl(case()))
    with pytest.raises(CommandError, match="no prompt with the key"):
        call_command("dataset", "import", "nope", "golden", str(path))
    with pytest.raises(CommandError, match="pass --format"):
        call_command("dataset", "import", "nope", "golden", str(tmp_path / "cases.yaml"))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("dataset", "import", "nope", "golden", str(tmp_path / "missing.csv"))


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_imports_of_one_key_at_once_store_it_once(released):
    """Each import locks the dataset, so the second sees the first's case and refuses the key
    (and the named constraint would refuse it anyway): one winner, one ``key_exists``."""
    import threading

    from django.db import connection

    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def run(i: int, name: str) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = dataset_import(
                dataset=dataset, content=jsonl(case(name, key="same")), format="jsonl"
            )
        except Exception as exc:  # the outcome is what the test asserts on
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(["Ada", "Bob"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    refused = [o for o in outcomes if isinstance(o, CasesInvalid)]
    assert len(refused) == 1
    assert [p.code for p in refused[0].problems] == ["key_exists"]
    assert list(Case.objects.filter(dataset=dataset).values_list("key", flat=True)) == ["same"]

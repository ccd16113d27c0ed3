"""The ``promptregistry`` command (sdk/src/promptregistry/cli/), run in process (``main(argv)``)
against a live registry (pytest-django's ``live_server``) with real API keys, as a CI job runs it:
files pulled, diffed, pushed and committed; eval runs waited for and judged by the promotion
gates; releases changed with If-Match; an environment's state read; and the refusals, each with
its exit code and a message that says what is wrong.

Eval runs complete as the embedded default completes them (Celery eager, in the server's request
thread), against the local model server (runs.fake_provider).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from promptregistry.cli import main
from promptregistry.cli.config import settings_load
from promptregistry.cli.errors import CliError

from api.services import apikey_create
from config.celery import app as celery_app
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.gates.services import promotion_gate_create
from registry.models import PromptVersion
from registry.promptfiles import prompts_export
from releases.models import Release
from tests.api.helpers import registry_state
from tests.evaluations.evalrun_scene import ACTOR, CASES, jsonl

# A live server needs a transactional test, whose flush SQLite refuses (release events are
# append-only, enforced by a trigger): these run on PostgreSQL only.
pytestmark = pytest.mark.postgres

KEY = "support.refund-reply"
NAME = f"{KEY}.yaml"
VARIABLES = ("PROMPTREGISTRY_URL", "PROMPTREGISTRY_API_KEY", "PROMPTREGISTRY_TIMEOUT")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of the test's own, and no setting from the machine running it."""
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in (*VARIABLES, "PROMPTREGISTRY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def cli(capsys) -> Callable[..., Ran]:
    def run(*argv: str) -> Ran:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Ran(int(code), captured.out, captured.err)

    return run


@pytest.fixture
def ci_key(live_server, released, work, monkeypatch) -> str:
    """A prompt repository's CI: reads and writes prompts, starts gate runs, changes releases."""
    _, raw = apikey_create(
        name="prompt-repo-ci", scopes=("prompts:read", "prompts:write", "releases:write")
    )
    monkeypatch.setenv("PROMPTREGISTRY_URL", live_server.url)
    monkeypatch.setenv("PROMPTREGISTRY_API_KEY", raw)
    return raw


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def versions() -> list[tuple[int, str]]:
    return list(
        PromptVersion.objects.filter(prompt__key=KEY)
        .order_by("number")
        .values_list("number", "status")
    )


# --- pull, push, diff ---------------------------------------------------------------------------


def test_pull_writes_what_the_export_writes_and_push_then_has_nothing_to_do(
    ci_key, cli, work, tmp_path
):
    pulled = cli("pull", "prompts", "--json")
    prompts_export(directory=tmp_path / "exported")

    assert pulled.code == 0, pulled.err
    assert pulled.json()["files"] == [{"name": NAME, "key": KEY, "version": 3, "written": True}]
    assert (work / "prompts" / NAME).read_text() == (tmp_path / "exported" / NAME).read_text()
    planned = cli("push", "prompts", "--dry-run")
    assert (planned.code, planned.err) == (0, "")
    assert f"unchanged {KEY} (version 3)" in planned.out
    assert "Nothing to do: every file is unchanged." in planned.out
    same = cli("diff", "prompts", "--json")
    assert (same.code, same.json()) == (
        0,
        {"differs": False, "files": [{"name": NAME, "differs": False}]},
    )
    # And the files go through manage.py's own import as they are.
    out = StringIO()
    call_command("prompts", "import", str(work / "prompts"), "--dry-run", stdout=out)
    assert "Dry run: 0 change(s) planned" in out.getvalue()


def test_an_edited_file_differs_becomes_a_draft_and_is_committed(ci_key, cli, work):
    cli("pull", "prompts")
    path = work / "prompts" / NAME
    edit(path, "You are a support agent (v3)", "You are a patient support agent (v3)")

    differs = cli("diff", "prompts")
    assert differs.code == 1
    assert "\n-    system: You are a support agent (v3)\n" in differs.out
    assert "\n+    system: You are a patient support agent (v3)\n" in differs.out
    assert f"+++ prompts/{NAME}" in differs.out
    assert f"update {KEY}: version 3 -> 4" in differs.out

    planned = cli("push", "prompts", "--dry-run")
    assert f"update {KEY}: draft 4 (from version 3)" in planned.out
    assert versions()[-1] == (3, "committed")

    pushed = cli("push", "prompts")
    assert pushed.code == 0, pushed.err
    assert "Pushed 1 change(s), as drafts." in pushed.out
    assert versions()[-1] == (4, "draft")
    assert cli("diff", "prompts").code == 1  # a draft is not the registry's latest version yet

    committed = cli("push", "prompts", "--commit", "--json")
    assert committed.code == 0, committed.err
    (item,) = committed.json()["files"]
    assert (item["version_change"], item["version"], item["committed"]) == ("commit_draft", 4, True)
    assert versions()[-1] == (4, "committed")
    assert cli("diff", "prompts").code == 0


def test_files_without_version_fields_are_never_refused_as_stale(ci_key, cli, work):
    # The repository is the source of truth: each merge commits, and the next change still goes in.
    cli("pull", "prompts", "--no-version-fields")
    path = work / "prompts" / NAME
    assert "content_hash:" not in path.read_text()

    for n, text in enumerate(("You are kind (v3)", "You are very kind (v3)"), start=4):
        edit(path, "You are a support agent (v3)" if n == 4 else "You are kind (v3)", text)
        ran = cli("push", "prompts", "--commit")
        assert ran.code == 0, ran.err
        assert versions()[-1] == (n, "committed")


def test_a_folder_with_one_invalid_file_applies_nothing(ci_key, cli, work):
    cli("pull", "prompts")
    edit(work / "prompts" / NAME, "You are a support agent (v3)", "You are kind (v3)")
    broken = work / "prompts" / "support.broken.yaml"
    broken.write_text(
        (work / "prompts" / NAME)
        .read_text()
        .replace(f"key: {KEY}", "key: support.broken")
        .replace("Greet {{ customer_name }}", "Greet {{ customer_name }"),
        encoding="utf-8",
    )
    before = registry_state()

    for extra in ((), ("--commit",)):
        pushed = cli("push", "prompts", *extra)

        assert pushed.code == 2
        assert "The prompt files cannot be imported." in pushed.err
        assert "support.broken.yaml:" in pushed.err
        assert "Nothing was changed" in pushed.err
        assert NAME not in pushed.err
    assert registry_state() == before
    assert cli("diff", "prompts").code == 2


def test_diff_and_push_name_the_file_they_cannot_read(ci_key, cli, work):
    (work / "prompts").mkdir()
    (work / "prompts" / NAME).write_bytes(b"key: \xff\n")

    for command in ("diff", "push"):
        ran = cli(command, "prompts")
        assert ran.code == 2
        assert f"prompts/{NAME} is not UTF-8 text" in ran.err
    assert cli("push", "empty").code == 2


# --- eval ----------------------------------------------------------------------------------------


@pytest.fixture
def golden(released, model_server, monkeypatch):
    """The eval runs' scene (tests/evaluations/evalrun_scene.py) on the released prompt; runs
    complete in the request that starts them."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=jsonl(CASES), format="jsonl")
    return dataset


def gate(released, min_pass_rate: int):
    return promotion_gate_create(
        environment=released.environments["production"],
        dataset_name="golden",
        min_pass_rate=min_pass_rate,
        must_pass_cases=True,
        actor=ACTOR,
    )


def test_eval_passes_the_gate_and_exits_0(ci_key, cli, released, golden):
    gate(released, 50)

    ran = cli("eval", KEY, "3", "--gate", "production")

    assert ran.code == 0, ran.err
    assert "on golden (holdout included): finished" in ran.out
    assert "production gates for version 3: passed" in ran.out
    assert "cases" in ran.err  # the progress line


def test_eval_refused_by_a_gate_exits_1_and_says_which(ci_key, cli, released, golden):
    gate(released, 95)

    ran = cli("eval", KEY, "latest", "--gate", "production", "--json")

    assert ran.code == 1, ran.err
    result = ran.json()
    assert (result["version"], result["passed"]) == (3, False)
    (run,) = result["runs"]
    assert (run["status"], run["include_holdout"]) == ("finished", True)
    failed = [c["gate"] for g in result["gates"]["gates"] for c in g["checks"] if not c["passed"]]
    assert failed == ["golden-pass-rate"]


def test_a_pushed_draft_is_judged_by_the_gates_before_it_is_committed(
    ci_key, cli, released, golden, work
):
    # A pull request's CI: push the change as a draft, gate-run the draft.
    gate(released, 50)
    cli("pull", "prompts")
    edit(work / "prompts" / NAME, "You are a support agent (v3)", "You are kind (v3)")
    assert cli("push", "prompts").code == 0

    ran = cli("eval", KEY, "draft", "--gate", "production")

    assert ran.code == 0, ran.err
    assert "version 4 on golden (holdout included): finished" in ran.out
    assert "production gates for version 4: passed" in ran.out


def test_eval_of_a_dataset_without_a_gate_reports_the_run(ci_key, cli, released, golden):
    ran = cli("eval", KEY, "2", "--dataset", "golden", "--baseline", "production")

    assert ran.code == 0, ran.err
    assert "version 2 on golden: finished" in ran.out
    assert "stable version 1" in ran.out


def test_eval_of_an_unknown_dataset_is_the_registrys_refusal(ci_key, cli, released, golden):
    ran = cli("eval", KEY, "3", "--dataset", "nope")

    assert ran.code == 2
    assert "The prompt has no dataset with that name." in ran.err
    assert cli("eval", KEY, "draft", "--dataset", "golden").err.endswith(
        f"{KEY} has no open draft.\n"
    )


# --- release and status --------------------------------------------------------------------------


def test_a_canary_is_started_promoted_and_rolled_back(ci_key, cli, released):
    started = cli("release", "canary", "staging", KEY, "3", "--percent", "10", "--reason", "try")
    assert started.code == 0, started.err
    assert "before: stable 2" in started.out
    assert "now:    stable 2, canary 3 at 10 %" in started.out

    assert cli("release", "ramp", "staging", KEY, "25").code == 0
    promoted = cli("release", "promote", "staging", KEY, "--reason", "good", "--json")
    assert promoted.code == 0, promoted.err
    assert promoted.json()["after"] | {"revision": None} == {
        "prompt": KEY,
        "environment": "staging",
        "revision": None,
        "stable": 3,
        "canary": None,
        "experiment": None,
        "shadow": None,
    }

    rolled = cli("release", "rollback", "staging", KEY, "--reason", "oops")
    assert rolled.code == 0, rolled.err
    assert "now:    stable 2, canary 3 at 25 %" in rolled.out
    assert released.release("staging").events.first().reason == "oops"


def test_a_stale_revision_is_refused_and_changes_nothing(ci_key, cli, released):
    read = cli("status", "staging", KEY, "--json").json()["releases"][0]["revision"]
    assert cli("release", "deploy", "staging", KEY, "3", "--reason", "meanwhile").code == 0
    before = Release.objects.get(pk=released.release("staging").pk).revision

    ran = cli("release", "deploy", "staging", KEY, "1", "--expect-revision", str(read))

    assert ran.code == 2
    assert "The release changed since it was read." in ran.err
    assert f"you read revision {read}; it is {before} now" in ran.err
    assert released.release("staging").revision == before


def test_a_release_a_gate_refuses_exits_1(ci_key, cli, released):
    # Production takes only versions that have been stable in staging; 3 never was.
    ran = cli("release", "deploy", "production", KEY, "3")

    assert ran.code == 1
    assert "The version may not be released here yet." in ran.err
    assert released.release("production").stable_version.number == 1


def test_status_shows_every_release_of_an_environment(ci_key, cli, released):
    from releases.services import release_canary_start

    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal("12.5"),
        actor=ACTOR,
    )

    every = cli("status", "staging")
    one = cli("status", "staging", KEY, "--json").json()

    assert every.code == 0, every.err
    revision = str(released.release("staging").revision)
    assert every.out.splitlines()[1].split(None, 2) == [
        KEY,
        revision,
        "stable 2, canary 3 at 12.5 %",
    ]
    assert one["releases"][0]["canary"] == {"version": 3, "percent": 12.5}
    assert cli("status", "staging", "--json").json()["releases"] == one["releases"]


# --- configuration and refusals ------------------------------------------------------------------


def test_no_url_or_no_key_is_exit_2_saying_where_to_set_it(cli, work, monkeypatch):
    ran = cli("status", "production")
    assert ran.code == 2
    assert "No registry URL: set PROMPTREGISTRY_URL" in ran.err

    monkeypatch.setenv("PROMPTREGISTRY_URL", "http://127.0.0.1:9")
    ran = cli("status", "production", "--json")
    assert ran.code == 2
    assert "No API key: set PROMPTREGISTRY_API_KEY" in ran.json()["error"]["message"]


def test_a_refused_key_is_a_problem_shown_with_where_the_key_came_from(
    live_server, released, cli, work, monkeypatch
):
    monkeypatch.setenv("PROMPTREGISTRY_URL", live_server.url)
    monkeypatch.setenv("PROMPTREGISTRY_API_KEY", "pr_0_wrong")

    ran = cli("status", "staging", "--json")

    assert ran.code == 2
    assert "A valid API key is needed." in ran.err
    assert "(the API key from the environment was refused)" in ran.err
    assert ran.json()["error"]["problem"]["type"] == "/problems/unauthenticated"


def test_a_registry_that_is_not_there_is_exit_2(cli, work, monkeypatch, closed_port):
    monkeypatch.setenv("PROMPTREGISTRY_URL", closed_port)
    monkeypatch.setenv("PROMPTREGISTRY_API_KEY", "pr_1_x")

    ran = cli("status", "staging")

    assert ran.code == 2
    assert f"Cannot reach the registry at {closed_port}" in ran.err


def test_a_usage_error_is_exit_2(cli, work):
    assert cli("release", "canary", "staging", KEY, "3").code == 2  # no --percent
    assert cli("eval", KEY, "3").code == 2  # neither --dataset nor --gate
    assert cli("--help").code == 0


def test_a_project_file_gives_the_url_and_the_environment_and_flags_win(
    ci_key, cli, work, monkeypatch, live_server, closed_port
):
    monkeypatch.delenv("PROMPTREGISTRY_URL")
    (work.parent / "promptregistry.toml").write_text(f'url = "{live_server.url}"\n')
    nested = work / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)

    assert cli("status", "staging").code == 0  # from the parent's file
    monkeypatch.setenv("PROMPTREGISTRY_URL", closed_port)
    assert cli("status", "staging").code == 2  # the environment wins over the file
    assert cli("status", "staging", "--url", live_server.url).code == 0  # the flag over both


def test_settings_come_from_the_first_place_that_has_them(tmp_path):
    user = tmp_path / "xdg" / "promptregistry" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('url = "https://user.example"\napi_key = "pr_user"\ntimeout = 5\n')
    project = tmp_path / "repo" / "promptregistry.toml"
    project.parent.mkdir()
    project.write_text('url = "https://project.example/"\n')
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    settings = settings_load(environ=environ, cwd=project.parent)
    assert (settings.url, settings.api_key, settings.timeout) == (
        "https://project.example",
        "pr_user",
        5.0,
    )
    assert settings.sources == {"url": str(project), "api_key": str(user), "timeout": str(user)}

    environ |= {"PROMPTREGISTRY_API_KEY": "pr_env", "PROMPTREGISTRY_TIMEOUT": "9"}
    settings = settings_load(environ=environ, cwd=project.parent, url="https://flag.example")
    assert (settings.url, settings.api_key, settings.timeout) == (
        "https://flag.example",
        "pr_env",
        9.0,
    )

    named = settings_load(environ=environ, cwd=project.parent, config=str(user))
    assert named.url == "https://user.example"  # --config replaces the project's and user's files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('url = "https://x"\nkey = "pr"\n', "unknown setting.* key; a config file holds"),
        ("url = [", "is not valid TOML"),
        ('url = "ftp://x"\napi_key = "k"\n', "must start with https:// or http://"),
        ('url = "https://x"\napi_key = "k"\ntimeout = 0\n', "above 0"),
        ('url = ""\n', "url must be a non-empty string"),
    ],
)
def test_a_config_file_with_a_mistake_is_refused(tmp_path, text, message):
    path = tmp_path / "promptregistry.toml"
    path.write_text(text)

    with pytest.raises(CliError, match=message):
        settings_load(environ={}, cwd=tmp_path)


def test_a_named_config_file_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(CliError, match="does not exist"):
        settings_load(environ={"PROMPTREGISTRY_CONFIG": str(tmp_path / "nope.toml")}, cwd=tmp_path)

"""Prompts as files keep a binding's tools: exported, imported back to the same content hash, and
a file with a bad tool refused with its pointer and line, nothing written."""

from __future__ import annotations

import copy

import pytest

from registry.models import Prompt, PromptVersion
from registry.sync import SyncInvalid, prompts_import_plan
from tests.factories import ORDER_LOOKUP, PromptFactory, make_version
from tests.registry.test_sync import VALID, export, load, read, rolled_back, write

pytestmark = pytest.mark.django_db

LOOKUP = ORDER_LOOKUP


def test_tools_are_exported_and_imported_back_unchanged(tmp_path):
    with rolled_back():
        version = make_version(
            PromptFactory(key="support.orders"),
            model={
                "provider": "local",
                "model": "echo-1",
                "tools": [LOOKUP],
                "tool_choice": {"type": "function", "function": {"name": "order_lookup"}},
                "parallel_tool_calls": True,
            },
        )
        digest = version.content_hash
        export(tmp_path)
    model = read(tmp_path / "support.orders.yaml")["model"]
    assert model["tools"] == [LOOKUP]
    assert model["parallel_tool_calls"] is True

    load(tmp_path)

    again = PromptVersion.objects.get(prompt__key="support.orders")
    assert again.content_hash == digest
    assert again.tools == [LOOKUP]


def test_a_file_with_duplicate_tool_names_is_refused_and_nothing_written(tmp_path):
    model = {**VALID["model"], "tools": [LOOKUP, copy.deepcopy(LOOKUP)]}  # no YAML alias
    write(tmp_path / f"{VALID['key']}.yaml", dict(VALID, model=model))

    with pytest.raises(SyncInvalid) as exc:
        prompts_import_plan(directory=tmp_path)

    [problem] = exc.value.failures[0].problems
    assert (problem.code, problem.pointer) == (
        "duplicate_tool_name",
        "/model/tools/1/function/name",
    )
    assert problem.line is not None
    assert not Prompt.objects.exists()

"""Pages in users' words (issue 13, item 6) beyond the canary page (test_canary_admin.py): a case's
holdout and must-pass flags are neutral tags, not the red cross Django draws for "no"; and a
refusal said as a message never repeats its own words (``registry.admin.errors``).

Personas: ``rita`` (in "Prompt authors" and "Release managers") reads cases, holdout included,
and results.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from registry.admin.errors import error_text, with_subject
from registry.errors import Problem, ProblemsError, RegistryError
from tests.evaluations.test_gates import gate_run, golden
from tests.factories import UserFactory


@pytest.fixture
def rita() -> Client:
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=["Prompt authors", "Release managers"]))
    client = Client()
    client.force_login(user)
    return client


def column(html: str, name: str) -> list[str]:
    """The cells of one list column (Django names them ``field-<name>``)."""
    return re.findall(rf'<td class="field-{name}">(.*?)</td>', html, re.S)


@pytest.mark.django_db
def test_the_case_list_tags_holdout_and_must_pass_cases_and_marks_nothing_else(rita, released):
    golden(released.prompt, must_pass=("c1",))  # c4, the last, is the holdout

    page = rita.get(reverse("admin:evaluations_case_changelist")).content.decode()

    holdout, must_pass = column(page, "holdout_mark"), column(page, "must_pass_mark")
    assert len(holdout) == len(must_pass) == 4
    assert sum("holdout" in cell for cell in holdout) == 1
    assert sum("must pass" in cell for cell in must_pass) == 1
    assert not any("icon-no" in cell for cell in holdout + must_pass)


@pytest.mark.django_db
def test_the_result_list_keeps_pass_and_fail_icons_for_the_verdict_only(rita, released):
    gate_run(golden(released.prompt, must_pass=("c1",)), 3, failing=("c2",))

    page = rita.get(reverse("admin:evaluations_evalresult_changelist")).content.decode()

    assert sum("icon-no" in cell for cell in column(page, "passed")) == 1  # c2 failed
    flags = column(page, "must_pass_mark") + column(page, "holdout_mark")
    assert not any("icon-" in cell for cell in flags)
    assert sum("must pass" in cell for cell in flags) == 1


@pytest.mark.django_db
def test_the_dataset_page_tags_its_cases_the_same_way(rita, released):
    dataset = golden(released.prompt)

    page = rita.get(reverse("admin:evaluations_dataset_change", args=[dataset.pk])).content
    cells = re.findall(rb'<td class="field-(?:holdout|must_pass)_mark">(.*?)</td>', page, re.S)

    assert len(cells) == 8
    assert not any(b"icon-no" in cell for cell in cells)


def test_a_problem_that_repeats_the_refusal_is_said_once():
    error = ProblemsError(
        [Problem("x", "The gate is wrong."), Problem("y", "Give a rate from 0 to 100.")],
        message="The gate is wrong.",
    )

    assert error_text(error) == "The gate is wrong. Give a rate from 0 to 100."


def test_a_subject_is_not_said_again_when_the_refusal_begins_with_it():
    assert (
        error_text(
            RegistryError("support.refund-reply v3 is committed already."),
            subject="support.refund-reply v3",
        )
        == "support.refund-reply v3 is committed already."
    )
    assert (
        error_text(RegistryError("It is committed already."), subject="support.refund-reply v3")
        == "support.refund-reply v3: It is committed already."
    )


def test_a_message_after_a_prefix_ends_with_one_full_stop():
    assert with_subject("Not changed", "x @ staging: The version may not be released.") == (
        "Not changed: x @ staging: The version may not be released."
    )

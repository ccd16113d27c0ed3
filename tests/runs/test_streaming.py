"""A model call streamed to a page (``runs.streaming.call_streamed``, the playground's): tokens as
they come, and the call recorded exactly once however the stream ends: at its end, when the page
goes away mid-stream, or when it runs past its maximum. The model is the local fake, trickling
its answer a word at a time so that a stream is long enough to leave."""

from __future__ import annotations

import pytest

from runs.playground import Target, playground_prepare
from runs.providers import Outcome
from runs.streaming import call_streamed
from tests.conftest import RELEASED_VARIABLES
from tests.factories import make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def prepare(released, model_server):
    def prepared(model: str):
        version = make_version(
            released.prompt,
            variables=RELEASED_VARIABLES,
            model={"provider": "local", "model": model},
        )
        return playground_prepare(
            target=Target(version=version), locale=None, variables={"customer_name": "Ada"}
        )

    return prepared


def test_tokens_come_as_they_are_written_and_the_end_is_recorded_once(prepare):
    ended = []
    items = list(
        call_streamed(prepare("echo-1"), on_end=ended.append, max_seconds=10, keepalive_seconds=5)
    )

    tokens = "".join(value for kind, value in items if kind == "token")
    assert items[-1][0] == "end"
    assert len(ended) == 1
    assert ended[0].completion is not None
    assert tokens == ended[0].completion.text


def test_a_page_that_leaves_mid_stream_cancels_the_call_and_still_records_it(prepare):
    ended = []
    stream = call_streamed(
        prepare("fault-trickle-50"), on_end=ended.append, max_seconds=10, keepalive_seconds=5
    )
    assert next(stream)[0] == "token"

    stream.close()

    assert len(ended) == 1
    assert [a.outcome for a in ended[0].attempts][-1] == Outcome.CANCELLED


def test_a_stream_past_its_maximum_is_cancelled_and_answered_as_such(prepare):
    ended = []
    items = list(
        call_streamed(
            prepare("fault-trickle-50"),
            on_end=lambda outcome: ended.append(outcome) or "recorded",
            max_seconds=0.5,
            keepalive_seconds=0.2,
        )
    )

    assert items[-1] == ("end", "recorded")
    assert len(ended) == 1
    assert ended[0].failure is not None
    assert [a.outcome for a in ended[0].attempts][-1] == Outcome.CANCELLED

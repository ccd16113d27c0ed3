"""How the client reads server-sent events (promptregistry.client.sse_events), as the stream
endpoint writes them and as the SSE format allows them: no server, no database."""

from __future__ import annotations

from promptregistry.client import sse_events


def test_events_comments_and_multiline_data():
    lines = [
        "event: hello",
        'data: {"environment":"staging","etag":"\\"abc\\""}',
        "",
        ": keep-alive",
        "",
        "event: release",
        'data: {"prompt":"support.refund-reply",',
        'data: "revision":8}',
        "",
        "data:no space after the colon",
        "",
    ]

    assert list(sse_events(lines)) == [
        ("hello", '{"environment":"staging","etag":"\\"abc\\""}'),
        ("release", '{"prompt":"support.refund-reply",\n"revision":8}'),
        ("message", "no space after the colon"),
    ]


def test_an_event_cut_off_before_its_blank_line_is_not_dispatched():
    assert list(sse_events(["event: release", 'data: {"prompt":"x","revision":1}'])) == []


def test_unknown_fields_and_events_without_data_are_ignored():
    lines = ["retry: 1000", "id: 7", "", "event: ping", "", "event: hello", "data: {}", ""]

    assert list(sse_events(lines)) == [("hello", "{}")]

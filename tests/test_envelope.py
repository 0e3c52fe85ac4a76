"""An envelope the edge accepts is one the pipeline reads back: `check` refuses exactly what `from_message` does."""

from __future__ import annotations

import dataclasses

import pytest

from leadhub.envelope import MAX_CONTENT_TYPE, MAX_KEY, Envelope, EnvelopeError

GOOD = Envelope(key="form:site:idem:abc", channel="form", connector="site", payload=b"{}", content_type="text/plain")


@pytest.mark.parametrize(
    "change",
    [
        {"key": "k" * (MAX_KEY + 1)},
        {"content_type": "text/plain; x=" + "a" * MAX_CONTENT_TYPE},
        {"connector": "c" * 65},
        {"channel": "fax"},
        {"key": ""},
        {"key": "form:site:idem:a\x00b"},
        {"connector": "si\x00te"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_check_refuses_what_the_pipeline_would_with_its_reason(change: dict) -> None:
    envelope = dataclasses.replace(GOOD, **change)
    with pytest.raises(EnvelopeError) as from_pipeline:
        Envelope.from_message(envelope.headers(), envelope.payload)
    with pytest.raises(EnvelopeError) as from_check:
        envelope.check()
    assert str(from_check.value) == str(from_pipeline.value)


def test_check_names_the_content_type_as_its_caller_says_it_was_sent() -> None:
    """A webhook's sender sent a Content-Type, not the queue's Leadhub-Content-Type."""
    envelope = dataclasses.replace(GOOD, content_type="t" * (MAX_CONTENT_TYPE + 1))
    with pytest.raises(EnvelopeError, match=r"^Content-Type is longer than 200 characters \(201\)$"):
        envelope.check(content_type_name="Content-Type")
    with pytest.raises(EnvelopeError, match=r"^Content-Type 'a\\rb' would not arrive as sent"):
        dataclasses.replace(GOOD, content_type="a\rb").check(content_type_name="Content-Type")


def test_an_envelope_at_every_limit_passes_both() -> None:
    envelope = dataclasses.replace(GOOD, key="k" * MAX_KEY, content_type="t" * MAX_CONTENT_TYPE, meta={"a": "b"})
    envelope.check()
    assert Envelope.from_message(envelope.headers(), envelope.payload) == envelope


@pytest.mark.parametrize("meta", ['{"a": %s}' % ("9" * 5000), "[" * 100_000], ids=["long number", "deep"])
def test_meta_json_the_parser_refuses_is_an_envelope_error(meta: str) -> None:
    """Not a plain ValueError or RecursionError: those were taken for a crash, not a malformed envelope."""
    with pytest.raises(EnvelopeError, match="Leadhub-Meta is not JSON"):
        Envelope.from_message(GOOD.headers() | {"Leadhub-Meta": meta}, b"")


@pytest.mark.parametrize(
    "change",
    [{"key": "form:s:idem:k "}, {"key": "form:s:idem:a\nb"}, {"key": "form:s:idem:k\u2028"}, {"content_type": "a\rb"}],
    ids=["trailing space", "line break", "U+2028 at the end", "content type with CR"],
)
def test_check_refuses_a_key_or_content_type_the_queue_would_change(change: dict) -> None:
    """NATS header values arrive trimmed and without CR/LF: the stored key's id would not be the id answered."""
    with pytest.raises(EnvelopeError, match="would not arrive as sent"):
        dataclasses.replace(GOOD, **change).check()

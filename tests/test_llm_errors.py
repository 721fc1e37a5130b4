"""``internal_error``: an exception no adapter recognised, as the stream's ``error`` event."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from stream_app.llm.errors import CODES, internal_error


@pytest.mark.parametrize("exc", [TimeoutError(), TimeoutError("read timed out")])
def test_internal_error_of_a_timeout_is_a_timeout(
    exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="stream_app"):
        error = internal_error(exc)
    assert (error.code, error.status) == ("timeout", CODES["timeout"][0])
    # An expected failure: no traceback in the log.
    assert caplog.records == []


def test_internal_error_is_logged_with_its_traceback_and_named_only_under_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise RuntimeError("secret detail")
    except RuntimeError as exc:
        failure = exc
    with caplog.at_level(logging.ERROR, logger="stream_app"):
        error = internal_error(failure)
        with override_settings(DEBUG=True):
            debug_error = internal_error(failure)
    assert (error.code, error.status) == ("internal_error", CODES["internal_error"][0])
    # Clients see what the exception was only under DEBUG.
    assert "secret detail" not in error.message
    assert "RuntimeError: secret detail" in debug_error.message
    assert [record.exc_info[1] for record in caplog.records if record.exc_info] == [
        failure,
        failure,
    ]

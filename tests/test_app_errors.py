"""User errors in the app log one line and no traceback (Gradio prints one for every gr.Error unless told not
to); a bug keeps its traceback, once."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from microclip.data.images import ImageError
from ui.common import user_errors


def raising(error: Exception):
    @user_errors
    def endpoint() -> None:
        raise error

    return endpoint


@pytest.mark.parametrize(
    "error", [ImageError("not an image: notes.txt"), KeyError("no model named 'x'"), gr.Error("Add an image first")]
)
def test_a_user_error_is_one_line_without_traceback(error, caplog):
    with caplog.at_level(logging.WARNING, logger="ui.common"), pytest.raises(gr.Error) as raised:
        raising(error)()
    assert raised.value.print_exception is False  # Gradio's queue then prints no traceback
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None and "\n" not in record.getMessage()
    assert "endpoint: " in record.getMessage()


def test_a_bug_keeps_its_traceback_once(caplog):
    with caplog.at_level(logging.WARNING, logger="ui.common"), pytest.raises(gr.Error) as raised:
        raising(ZeroDivisionError("division by zero"))()
    assert raised.value.print_exception is False and "Internal error in endpoint" in raised.value.message
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None

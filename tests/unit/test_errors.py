"""The one exception tree: every error a caller should catch is a NexusError, and the
tree drawn in ops/base/errors.py's docstring names every class the module defines."""

from __future__ import annotations

import inspect
import io
import re

import pytest

from ops.base import errors
from ops.testing import k6
from ops.testing.checks import CheckFailed, Skip, run_checks


def _classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    ]


def test_every_error_derives_from_nexus_error_and_is_drawn() -> None:
    classes = _classes()
    assert len(classes) >= 13
    drawing = errors.__doc__ or ""
    for cls in classes:
        assert issubclass(cls, errors.NexusError), cls
        drawn = re.search(rf"^[ │├└─]*{cls.__name__}\b", drawing, re.MULTILINE)
        assert drawn, f"{cls.__name__} missing from the drawing"


def test_checks_k6_and_node_loss_errors_are_in_the_tree() -> None:
    assert k6.K6Failed is errors.K6Failed and k6.K6NotFound is errors.K6NotFound
    assert issubclass(errors.K6NotFound, errors.RuntimeUnavailable)
    assert issubclass(errors.NodeLossFailed, CheckFailed)
    assert issubclass(CheckFailed, AssertionError)  # fails a pytest test like an assert
    assert issubclass(Skip, errors.NexusError)
    assert errors.K6Failed("k6 exited", 107).exit_code == 107


def test_one_except_nexus_error_catches_a_check_failure() -> None:
    def failing() -> str:
        raise errors.NodeLossFailed("2 lost")

    def skipped() -> str:
        raise Skip("not here")

    with pytest.raises(errors.NexusError, match="2 lost"):
        failing()
    outcomes = run_checks([("lost", failing), ("skip", skipped)], out=io.StringIO())
    assert [(o.status, o.detail) for o in outcomes] == [
        ("failed", "NodeLossFailed: 2 lost"),
        ("skipped", "not here"),
    ]

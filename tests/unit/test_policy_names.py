"""Every place outside the engine that lists the placement policies lists exactly the engine's
(`scheduler.POLICIES`): the task spec's enum (and so the OpenAPI schema and TES'
`backend_parameters.policy`), the console's task form and the twin page's labels, the CLI's
help."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from suanli.scheduler import POLICIES


def test_the_task_spec_accepts_every_policy_and_names_them_when_refusing() -> None:
    from suanli.specs import TaskCreate, invalid_value

    annotation = TaskCreate.model_fields["policy"].annotation
    (literal,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    assert set(typing.get_args(literal)) == set(POLICIES)
    executors = [{"command": ["true"]}]
    spec = TaskCreate.model_validate({"executors": executors, "policy": "green-location"})
    assert spec.policy == "green-location"
    with pytest.raises(ValidationError) as refused:
        TaskCreate.model_validate({"executors": executors, "policy": "greenest"})
    error = invalid_value(refused.value)
    assert error.field == "policy"
    for name in POLICIES:
        assert f"'{name}'" in error.expected


def test_the_console_offers_every_policy() -> None:
    from suanli.console import i18n, pages_tasks, pages_twin

    assert set(pages_tasks.POLICIES) == set(POLICIES)
    assert pages_tasks.POLICIES[0] == "balanced"  # the form's default comes first
    for name in POLICIES:  # the twin page labels each checkbox
        assert f"twin.policy.{name}" in pages_twin.MESSAGES
        assert name in i18n.translate(f"twin.policy.{name}", "en")


def test_the_schedule_command_names_every_policy() -> None:
    from typer.testing import CliRunner

    from suanli.cli import app

    result = CliRunner().invoke(app, ["schedule", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "|".join(POLICIES) in result.output

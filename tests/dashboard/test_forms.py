"""The create-task form and the jobs list filters."""

from __future__ import annotations

import pytest

from dashboard.pages.jobs import FormError, TaskForm, matches


def test_form_builds_the_same_spec_as_ptap_run() -> None:
    spec = TaskForm(command="python bench.py --size '10 MB'", name=" b ", nodes=["n1"],
                    targets="label:gpu, n2", collect=["system", "perf"], interval="0.5",
                    timeout="60", repeat="3", tags="build=1.2.3, branch=main",
                    env="A=1\nB=x=y").spec()
    assert spec.command == ["python", "bench.py", "--size", "10 MB"]
    assert spec.name == "b" and spec.targets == ["n1", "label:gpu", "n2"]
    assert spec.collect == ["system", "perf"] and spec.interval == 0.5
    assert spec.timeout == 60 and spec.repeat == 3
    assert spec.tags == {"build": "1.2.3", "branch": "main"} and spec.env == {"A": "1", "B": "x=y"}
    assert TaskForm(command="a | b", shell=True).spec().command == ["/bin/sh", "-c", "a | b"]
    assert TaskForm(command="true").spec().targets == ["all"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("command", "", "command: required"),
    ("command", "echo 'unterminated", "command:"),
    ("interval", "fast", "interval: 'fast' is not a number"),
    ("repeat", "0", "repeat: must be between"),
    ("tags", "nokey", "tags: 'nokey' is not KEY=VALUE"),
    ("collect", ["system", "gpu"], "collectors: unknown gpu"),
])
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    form = TaskForm(command="true")
    setattr(form, field, value)
    with pytest.raises(FormError, match=message):
        form.spec()


def test_list_filters() -> None:
    job = {"id": "abc123", "name": "nightly", "state": "running",
           "spec": {"command": ["make", "bench"], "targets": ["all"], "tags": {"build": "7"}},
           "runs": [{"node": "n1"}]}
    assert matches(job, "", "", "", "")
    assert matches(job, "running", "n1", "build=7", "BENCH")
    assert not matches(job, "failed", "", "", "")
    assert not matches(job, "", "n2", "", "")
    assert matches(job, "", "", "build", "") and not matches(job, "", "", "build=8", "")
    assert not matches(job, "", "", "", "deploy")

"""One job-options schema: the CLI's flags and the API's body are derived from it."""

from __future__ import annotations

import json

import pytest

from app.flags import flag, option_flags
from layerlens.errors import InputError
from layerlens.options import JobOptions, option_fields, parse_size
from layerlens_client.cli import main as layerlens_cli
from service.schemas import JobCreate


def _analyze_flags() -> set[str]:
    import argparse

    from app.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    analyze = parser._subparsers._group_actions[0].choices["analyze"]  # type: ignore[union-attr]
    return {option for action in analyze._actions for option in action.option_strings}


def test_every_option_is_a_flag_of_analyze_and_a_field_of_post_jobs():
    fields = set(option_fields())
    assert {"analyses", "layers", "max_samples", "seed", "input_shape", "mean", "std",
            "batch_size", "memory_budget", "max_features", "device"} <= fields
    flags = _analyze_flags()
    assert {flag(name) for name in fields - {"analyses"}} <= flags
    assert {"--analyses", "--spec"} <= flags  # analyses: by kind names or a spec file
    assert set(JobCreate.model_fields) == fields | {"model_id", "series", "dataset"}
    for name in fields:  # the same rules and defaults on both sides
        assert JobCreate.model_fields[name].default == JobOptions.model_fields[name].default


def test_the_api_documents_every_option_with_its_default():
    schema = JobCreate.model_json_schema()
    assert schema["properties"]["batch_size"]["default"] == 256
    assert schema["properties"]["device"]["enum"] == ["auto", "cpu", "cuda"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(("text", "size"), [("2GB", 2 * 1024**3), ("512MB", 512 * 1024**2),
                                            ("1.5 GiB", int(1.5 * 1024**3)), ("4096", 4096)])
def test_sizes(text, size):
    assert parse_size(text) == size
    assert JobOptions(memory_budget=text).memory_budget == size


@pytest.mark.parametrize(("options", "flag_message", "field_message"), [
    ({"batch_size": 0}, "--batch-size: Input should be greater than or equal to 1",
     "batch_size: Input should be greater than or equal to 1"),
    ({"memory_budget": "lots"}, "--memory-budget: expected a size like 512MB",
     "memory_budget: expected a size like 512MB"),
    ({"std": [0.0]}, "--std.0: Input should be greater than 0", "std.0: Input should be"),
    ({"input_shape": ["1", "x"]}, "--input-shape.1: Input should be a valid integer",
     "input_shape.1: Input should be a valid integer"),
    ({"analyses": [{"kind": "probe"}]}, "--analyses: invalid analysis spec: analyses[0].kind",
     "analyses: invalid analysis spec: analyses[0].kind must be one of linear_probe"),
    ({"colour": "red"}, "unknown option '--colour'", "unknown option 'colour'"),
])
def test_a_bad_option_names_the_flag_or_the_field(options, flag_message, field_message):
    with pytest.raises(InputError) as caught:
        JobOptions.parse(options, spell=flag)
    assert str(caught.value).startswith(flag_message)
    with pytest.raises(InputError) as caught:
        JobOptions.parse(options)
    assert str(caught.value).startswith(field_message)


def test_the_cli_passes_its_flags_through_the_schema(tmp_path, capsys):
    status = layerlens_cli(["analyze", "model.onnx", "--dataset", "builtin:iris",
                            "--batch-size", "0", "--out", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        "layerlens: error: --batch-size: Input should be greater than or equal to 1")


def test_options_round_trip_through_the_job_file():
    options = JobOptions.parse({"analyses": [{"kind": "projection", "method": "pca"}],
                                "mean": [0.5], "std": [0.25], "batch_size": 32,
                                "memory_budget": "1GB", "device": "cpu"})
    again = JobOptions.parse(json.loads(json.dumps(options.model_dump(mode="json"))))
    assert again == options and again.analyses[0].method == "pca"  # type: ignore[index, attr-defined]
    assert set(option_flags()) == set(option_fields()) - {"analyses"}

"""Workspace parsing and validation: every rule of issue 8 reports the field path it concerns."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from runtime.controller import spec
from tests.controller.examples import workspace_examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

INFERENCE = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "ws"},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
TUNING = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "tune"},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
    "tuning": {"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora",
               "input": {"urls": ["https://example.com/data.parquet"]},
               "output": {"image": "registry.example.com/adapter:1", "imagePushSecret": "push"}},
}


def with_changes(base: dict, **paths) -> dict:
    """A copy of `base` with dotted paths set (value None deletes the key)."""
    obj = copy.deepcopy(base)
    for dotted, value in paths.items():
        keys = dotted.split("__")
        node = obj
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return obj


def problems_of(obj: dict) -> dict[str, str]:
    with pytest.raises(spec.WorkspaceInvalid) as info:
        spec.resolve(obj)
    return {p.path: p.message for p in info.value.problems}


def test_valid_workspaces_parse():
    ws = spec.resolve(INFERENCE).workspace
    assert ws.preset_name == "phi-3-mini-4k-instruct" and ws.namespace == "default"
    ws = spec.resolve(TUNING).workspace
    assert ws.tuning.method == "qlora" and ws.tuning.output.image_push_secret == "push"


def test_v1alpha1_defaults_the_instance_type_v1beta1_does_not():
    no_type = with_changes(INFERENCE, resource__instanceType=None)
    assert spec.parse_workspace(no_type).instance_type is None
    assert spec.parse_workspace(with_changes(no_type, apiVersion="kaito.sh/v1alpha1")).instance_type == \
        spec.V1ALPHA1_DEFAULT_INSTANCE_TYPE


def test_unknown_preset_names_the_field_and_lists_known_ones():
    found = problems_of(with_changes(INFERENCE, inference__preset__name="no-such-model"))
    assert "unknown preset 'no-such-model'" in found["inference.preset.name"]
    assert "phi-3-mini-4k-instruct" in found["inference.preset.name"]
    found = problems_of(with_changes(TUNING, tuning__preset__name="nope"))
    assert "tuning.preset.name" in found


def test_inference_and_tuning_both_or_neither():
    both = copy.deepcopy(TUNING)
    both["inference"] = copy.deepcopy(INFERENCE["inference"])
    assert "both are set" in problems_of(both)["inference/tuning"]
    assert "neither is set" in problems_of(with_changes(INFERENCE, inference=None))["inference/tuning"]


def test_more_than_one_tuning_input():
    found = problems_of(with_changes(TUNING, tuning__input__image="registry.example.com/data:1"))
    assert "got urls, image" in found["tuning.input"]
    found = problems_of(with_changes(TUNING, tuning__input={}))
    assert "got none" in found["tuning.input"]


def test_output_image_needs_a_push_secret():
    found = problems_of(with_changes(TUNING, tuning__output__imagePushSecret=None))
    assert "imagePushSecret" in found["tuning.output.imagePushSecret"]


def test_method_must_be_lora_or_qlora():
    found = problems_of(with_changes(TUNING, tuning__method="full"))
    assert found["tuning.method"] == "must be lora or qlora, got 'full'"


def test_adapter_names_must_be_dns1123_and_strength_in_0_1():
    adapters = [
        {"source": {"name": "Bad_Name", "image": "r.example.com/a:1"}, "strength": "0.5"},
        {"source": {"name": "good", "image": "r.example.com/b:1"}, "strength": "1.5"},
        {"source": {"name": "other", "image": "r.example.com/c:1"}, "strength": "strong"},
        {"source": {"name": "fine", "image": "r.example.com/d:1"}, "strength": "0"},
    ]
    found = problems_of(with_changes(INFERENCE, inference__adapters=adapters,
                                     metadata__annotations={spec.ANNOTATION_RUNTIME: "transformers"}))
    assert "not a DNS-1123 label" in found["inference.adapters[0].source.name"]
    assert "got '1.5'" in found["inference.adapters[1].strength"]
    assert "got 'strong'" in found["inference.adapters[2].strength"]
    assert not any(path.startswith("inference.adapters[3]") for path in found)


def test_weighted_adapters_need_the_transformers_runtime():
    adapters = [{"source": {"name": "a", "image": "r.example.com/a:1"}, "strength": "0.5"}]
    found = problems_of(with_changes(INFERENCE, inference__adapters=adapters))
    assert "kaito.sh/runtime" in found["inference.adapters[0].strength"]
    ok = with_changes(INFERENCE, inference__adapters=adapters,
                      metadata__annotations={spec.ANNOTATION_RUNTIME: "transformers"})
    assert spec.resolve(ok).workspace.inference.adapters[0].strength_value == 0.5


def test_all_problems_are_reported_at_once():
    bad = with_changes(TUNING, tuning__method="sft", tuning__output__imagePushSecret=None,
                       tuning__input__image="r.example.com/x:1")
    assert {"tuning.method", "tuning.output.imagePushSecret", "tuning.input"} <= set(problems_of(bad))


def test_unknown_and_missing_fields_are_named():
    found = problems_of(with_changes(INFERENCE, resource__labelSelecter={"matchLabels": {}},
                                     resource__labelSelector=None))
    assert found["resource.labelSelecter"] == "unknown field"
    assert found["resource.labelSelector"] == "required field is missing"
    found = problems_of(with_changes(INFERENCE, resource__count=0))
    assert "resource.count" in found


def test_api_version_and_kind_are_checked():
    assert "apiVersion" in problems_of(with_changes(INFERENCE, apiVersion="kaito.sh/v2"))
    assert "kind" in problems_of(with_changes(INFERENCE, kind="Deployment"))


def test_preset_that_does_not_fit_is_an_error_at_instance_type():
    small = with_changes(INFERENCE, inference__preset__name="phi-3-medium-4k-instruct",
                         resource__instanceType="Standard_NV36ads_A10_v5")
    message = problems_of(small)["resource.instanceType"]
    assert "short by" in message and "Standard_NV72ads_A10_v5" in message  # shortfall and a suggestion


def test_bypass_annotation_turns_the_fit_error_into_a_warning():
    small = with_changes(INFERENCE, inference__preset__name="phi-3-medium-4k-instruct",
                         resource__instanceType="Standard_NV36ads_A10_v5",
                         metadata__annotations={spec.ANNOTATION_BYPASS_RESOURCE_CHECKS: "true"})
    resolved = spec.resolve(small)
    assert resolved.fit.plan is None
    assert any("short by" in w and spec.ANNOTATION_BYPASS_RESOURCE_CHECKS in w for w in resolved.fit.warnings)


def test_unknown_instance_type_is_an_error_with_suggestions():
    found = problems_of(with_changes(INFERENCE, resource__instanceType="Standard_NC24ads_A100_v9"))
    assert "Standard_NC24ads_A100_v4" in found["resource.instanceType"]


def test_fitting_workspace_gets_a_plan():
    resolved = spec.resolve(INFERENCE)
    assert resolved.fit.plan.gpus_per_node == 1 and resolved.fit.plan.nodes == 1
    tuning = spec.resolve(TUNING)
    assert tuning.fit.plan.method == "qlora"


def test_tuning_runs_on_one_node():
    assert "resource.count" in problems_of(with_changes(TUNING, resource__count=2))


@pytest.mark.parametrize("example", workspace_examples(), ids=lambda e: e[0].name)
def test_examples_are_valid(example):
    spec.resolve(example[1])

"""Inference and tuning plans: layouts, dtype, breakdowns, and every refusal with its message."""

from __future__ import annotations

import dataclasses
import json

import pytest

import presets
from presets._schema import GIB
from runtime.sizing.catalog import from_node_labels, get_instance_type, instance_types
from runtime.sizing.plan import (
    MAX_MODEL_LEN_STEP,
    DoesNotFit,
    InferencePlan,
    PlanError,
    estimate_tuning_memory,
    plan_inference,
    plan_tuning,
)

A100 = get_instance_type("Standard_NC24ads_A100_v4")


def byo(gpus: int, gib: int, major: int = 8, minor: int = 6):
    return from_node_labels({"nvidia.com/gpu.product": "Test-GPU", "nvidia.com/gpu.count": str(gpus),
                             "nvidia.com/gpu.memory": str(gib * 1024), "nvidia.com/cuda.compute.major": str(major),
                             "nvidia.com/cuda.compute.minor": str(minor)})


def test_phi_3_mini_fits_one_a100():
    plan = plan_inference(presets.get("phi-3-mini-4k-instruct"), A100)
    assert isinstance(plan, InferencePlan)
    assert (plan.nodes, plan.gpus_per_node, plan.tensor_parallel_size, plan.pipeline_parallel_size) == (1, 1, 1, 1)
    assert plan.dtype == "bfloat16" and plan.gpu_memory_utilization == 0.84
    assert plan.max_model_len == 4096  # the model's limit: it fits
    assert set(plan.breakdown) == {"weights", "kv_cache", "activations", "runtime_overhead", "adapters"}
    assert plan.breakdown["kv_cache"] == pytest.approx(4096 * 393216 / GIB, abs=1e-3)
    assert plan.breakdown["weights"] == pytest.approx(7.12 * 1.02 * 1.05, abs=1e-3)
    assert plan.required_gib_per_gpu == pytest.approx(sum(plan.breakdown.values()), abs=1e-2)
    assert plan.available_gib_per_gpu == pytest.approx(80 * 0.84)
    assert json.loads(json.dumps(plan.to_dict()))["preset"] == "phi-3-mini-4k-instruct"


def test_llama_3_3_70b_does_not_fit_one_a100_and_the_suggestion_fits():
    preset = presets.get("llama-3.3-70b-instruct")
    with pytest.raises(DoesNotFit) as err:
        plan_inference(preset, A100)
    e = err.value
    assert e.shortfall_gib > 70 and e.suggestion
    assert f"short by {e.shortfall_gib:.2f} GiB" in str(e) and e.suggestion in str(e)
    suggested = get_instance_type(e.suggestion)
    assert suggested.provider == "azure"
    plan_inference(preset, suggested)  # fits
    # ...and it is the smallest: no catalogued Azure type with less GPU memory fits.
    for it in instance_types():
        if it.provider == "azure" and not it.deprecated and it.vendor == "nvidia" \
                and it.total_gpu_memory_gib < suggested.total_gpu_memory_gib:
            with pytest.raises(PlanError):
                plan_inference(preset, it)


def test_a_distributed_preset_spreads_over_several_nodes():
    plan = plan_inference(presets.get("llama-3.3-70b-instruct"), A100, count=4, max_model_len=8192)
    assert (plan.nodes, plan.tensor_parallel_size, plan.pipeline_parallel_size) == (3, 1, 3)
    assert plan.required_gib_per_gpu <= plan.available_gib_per_gpu


def test_several_nodes_needed_but_preset_not_distributed():
    with pytest.raises(DoesNotFit, match="not distributed") as err:
        plan_inference(presets.get("qwen2.5-coder-32b-instruct"), A100, count=2)
    assert err.value.suggestion and err.value.shortfall_gib > 0


def test_several_nodes_refused_for_the_transformers_runtime():
    with pytest.raises(DoesNotFit, match="transformers runtime serves from one node only"):
        plan_inference(presets.get("llama-3.3-70b-instruct"), A100, count=3, runtime="transformers")


def test_tensor_parallelism_disabled_but_needed():
    """falcon-7b (71 heads) cannot split over the two 16 GiB GPUs that a Mistral-7B splits over fine."""
    two_small = get_instance_type("Standard_NC16_A2")
    with pytest.raises(DoesNotFit, match="tensor parallelism is disabled") as err:
        plan_inference(presets.get("falcon-7b"), two_small)
    assert err.value.shortfall_gib > 0
    plan = plan_inference(presets.get("mistral-7b"), two_small)
    assert plan.tensor_parallel_size == 2


def test_model_too_big_for_every_catalogued_node_has_no_suggestion():
    """A 1.2 TiB single-node model (a DeepSeek-V3-sized bf16 checkpoint) fits no catalogued node."""
    huge = dataclasses.replace(presets.get("falcon-40b"), name="huge", weights_gib=1250.0)
    with pytest.raises(DoesNotFit, match="no catalogued instance type fits") as err:
        plan_inference(huge, get_instance_type("Standard_ND96isr_H200_v5"))
    assert err.value.suggestion is None and err.value.shortfall_gib > 0


def test_max_model_len_beyond_the_context_is_refused():
    with pytest.raises(PlanError, match="max_model_len 8192 exceeds the context length of phi-3-mini-4k-instruct"):
        plan_inference(presets.get("phi-3-mini-4k-instruct"), A100, max_model_len=8192)
    with pytest.raises(PlanError, match="max_model_len must be a positive"):
        plan_inference(presets.get("phi-3-mini-4k-instruct"), A100, max_model_len=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 0}, "count must be"),
    ({"runtime": "tgi"}, "runtime must be"),
    ({"adapters": -1}, "adapters must be"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    with pytest.raises(PlanError, match=message):
        plan_inference(presets.get("phi-4"), A100, **kwargs)


def test_default_max_model_len_is_the_longest_that_fits():
    a10 = get_instance_type("Standard_NV36ads_A10_v5")
    preset = presets.get("llama-3.1-8b-instruct")
    plan = plan_inference(preset, a10)
    assert 2048 <= plan.max_model_len < preset.context_length
    assert plan.max_model_len % MAX_MODEL_LEN_STEP == 0
    assert plan.gpu_memory_utilization == 0.82  # Kaito's value for A10
    assert plan.notes and "longest that fits" in plan.notes[0]
    plan_inference(preset, a10, max_model_len=plan.max_model_len)
    with pytest.raises(DoesNotFit):
        plan_inference(preset, a10, max_model_len=plan.max_model_len + MAX_MODEL_LEN_STEP)


def test_dtype_follows_compute_capability_and_the_preset():
    v100 = get_instance_type("Standard_NC6s_v3")
    assert plan_inference(presets.get("phi-3-mini-4k-instruct"), v100).dtype == "float16"
    assert plan_inference(presets.get("phi-3-mini-4k-instruct"), A100).dtype == "bfloat16"
    local = plan_inference(presets.get("smollm2-135m-instruct"), v100)
    assert local.dtype == "float32"
    assert local.breakdown["weights"] == pytest.approx(0.25 * 2 * 1.02 * 1.05, abs=1e-3)  # bf16 file, fp32 served
    with pytest.raises(PlanError, match="bfloat16 only"):
        plan_inference(presets.get("gemma-3-4b-instruct"), v100)


def test_small_models_are_replicated_over_the_gpus():
    plan = plan_inference(presets.get("phi-3-mini-4k-instruct"), get_instance_type("Standard_NC96ads_A100_v4"))
    assert (plan.data_parallel_size, plan.tensor_parallel_size, plan.gpus_per_node) == (4, 1, 4)


def test_adapters_cost_memory_and_are_refused_where_kaito_disallows_lora():
    preset = presets.get("mistral-7b-instruct")
    none = plan_inference(preset, A100, max_model_len=4096)
    four = plan_inference(preset, A100, max_model_len=4096, adapters=4)
    assert none.breakdown["adapters"] == 0 < four.breakdown["adapters"]
    assert four.required_gib_per_gpu > none.required_gib_per_gpu
    with pytest.raises(PlanError, match="DisallowLoRA"):
        plan_inference(presets.get("falcon-7b"), A100, adapters=1)


def test_non_nvidia_accelerators_are_refused():
    with pytest.raises(PlanError, match="NVIDIA CUDA GPUs"):
        plan_inference(presets.get("phi-4"), get_instance_type("Standard_NG32ads_V620_v1"))


def test_byo_node_from_labels():
    plan = plan_inference(presets.get("qwen2.5-coder-32b-instruct"), byo(2, 48))
    assert plan.tensor_parallel_size == 2 and plan.instance_type == "byo:Test-GPU"


# ------------------------------------------------------------------------------------------------------ tuning


def test_tuning_estimate_parts():
    preset = presets.get("mistral-7b")
    q = estimate_tuning_memory(preset, "qlora")
    lo = estimate_tuning_memory(preset, "lora")
    keys = {"base_weights", "adapter", "optimizer_state", "gradients", "activations", "overhead", "total"}
    assert set(q) == set(lo) == keys
    assert q["total"] == pytest.approx(sum(v for k, v in q.items() if k != "total"), abs=0.01)
    assert lo["base_weights"] == pytest.approx(7.24e9 * 2 / GIB, rel=0.01)  # 16-bit base
    assert q["base_weights"] < lo["base_weights"] / 3  # 4-bit linear layers
    assert q["optimizer_state"] == pytest.approx(2 * q["adapter"], abs=0.002)  # AdamW: two fp32 moments
    assert estimate_tuning_memory(preset, "qlora", batch_size=4, seq_len=4096)["activations"] > q["activations"] * 10


@pytest.mark.parametrize("name", [p.name for p in presets.all_presets()
                                  if p.kaito and p.kaito.tuning_total_gpu_memory_gib and p.supports_tuning("qlora")])
def test_qlora_needs_no_more_than_kaito_declares(name):
    """Kaito declares (never checks) tuning memory, sized for its qlora defaults (batch 1); ours must fit in it."""
    preset = presets.get(name)
    assert estimate_tuning_memory(preset, "qlora")["total"] <= preset.kaito.tuning_total_gpu_memory_gib


def test_plan_tuning_fits_and_refuses():
    a10 = get_instance_type("Standard_NV36ads_A10_v5")
    plan = plan_tuning(presets.get("falcon-7b"), a10, "qlora")
    assert plan.required_gib_per_gpu <= plan.available_gib_per_gpu and plan.gpus == 1 and plan.dtype == "bfloat16"
    assert plan_tuning(presets.get("phi-3-mini-4k-instruct"), get_instance_type("Standard_NC6s_v3"),
                       "qlora").dtype == "float16"
    with pytest.raises(DoesNotFit, match="lora tuning of phi-4") as err:
        plan_tuning(presets.get("phi-4"), a10, "lora")
    assert err.value.shortfall_gib > 0
    plan_tuning(presets.get("phi-4"), get_instance_type(err.value.suggestion), "lora")
    with pytest.raises(PlanError, match="one node"):
        plan_tuning(presets.get("phi-4"), A100, "qlora", count=2)
    with pytest.raises(PlanError, match="does not support qlora tuning"):
        plan_tuning(presets.get("falcon-7b-instruct"), A100, "qlora")
    with pytest.raises(PlanError, match="method must be"):
        plan_tuning(presets.get("phi-4"), A100, "full")
    with pytest.raises(PlanError, match="seq_len 9000 exceeds"):
        plan_tuning(presets.get("phi-3-mini-4k-instruct"), A100, "qlora", seq_len=9000)


def test_every_plan_that_is_made_fits_its_own_numbers():
    """Property over presets x catalogue: a returned plan never needs more than it has, nor more context than the
    model supports, and uses no more GPUs than the node has."""
    made = 0
    for preset in presets.all_presets():
        for it in instance_types():
            if it.vendor != "nvidia":
                continue
            try:
                plan = plan_inference(preset, it)
            except PlanError:
                continue
            made += 1
            assert plan.required_gib_per_gpu <= plan.available_gib_per_gpu, (preset.name, it.name)
            assert min(preset.context_length, 2048) <= plan.max_model_len <= preset.context_length
            assert plan.tensor_parallel_size * plan.data_parallel_size <= it.gpu_count
            assert preset.architecture.attention_heads % plan.tensor_parallel_size == 0
    assert made > 500


def test_instance_type_by_name_and_adapters_as_a_list():
    """Callers with a SKU string and a list of found adapters (runtime.inference) get the same plan."""
    preset = presets.get("mistral-7b-instruct")
    by_name = plan_inference(preset, "Standard_NC24ads_A100_v4", max_model_len=4096, adapters=2)
    assert by_name == plan_inference(preset, A100, max_model_len=4096, adapters=2)
    rank64 = [type("Adapter", (), {"rank": 64})(), type("Adapter", (), {"rank": 8})()]
    big = plan_inference(preset, A100, max_model_len=4096, adapters=rank64)
    assert big.breakdown["adapters"] == pytest.approx(4 * by_name.breakdown["adapters"], rel=0.01)  # 64/16 slots
    with pytest.raises(PlanError, match="unknown instance type 'Standard_NC24'"):
        plan_inference(preset, "Standard_NC24")
    assert plan_tuning(presets.get("phi-4"), "Standard_NC24ads_A100_v4", "qlora").gpus == 1

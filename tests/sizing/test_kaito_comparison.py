"""Our inference plans against Kaito's numbers.

1. Kaito HEAD's node estimator (re-implemented here from kaito-reference.md §1.4, independently of
   runtime/sizing/plan.py): for every preset x every catalogued NVIDIA type, at Kaito's default max-model-len
   2048, "fits on one node" must agree, and each disagreement must be one of our documented differences.
2. Kaito v0.6.2's published GPU counts / total memory (stored on each preset): tolerance stated per test.
3. One test per deliberate difference (docs/sizing.md, plan.py docstring).
"""

from __future__ import annotations

import pytest

import presets
from presets._schema import GIB
from runtime.sizing.catalog import from_node_labels, get_instance_type, instance_types
from runtime.sizing.plan import (
    DoesNotFit,
    PlanError,
    kaito_estimator_min_gpus,
    plan_inference,
)

HUB = [p for p in presets.all_presets() if not p.is_local]
NVIDIA = [it for it in instance_types() if it.vendor == "nvidia" and not it.deprecated]


def kaito_min_gpus(preset, it, max_model_len=2048):
    """nodesestimator/estimator.go: weights x1.02; usable x0.84; 2.3 GiB + KV/GPUCount reserve; /1.05; +1."""
    weights = preset.weights_gib * 1.02
    usable = it.gpu_memory_gib * 0.84
    reserve = 2.3 + max_model_len * preset.kaito.bytes_per_token / it.gpu_count / GIB
    avail = (usable - reserve) / 1.05
    return None if avail <= 0 else int(weights / avail) + 1


def _explained(preset, it) -> str | None:
    """Why our single-node answer may differ from Kaito's estimator, or None."""
    arch = preset.architecture
    if not preset.tensor_parallel and it.gpu_count > 1:
        return "tensor parallelism disabled: one GPU used"
    if arch.attention_heads % it.gpu_count or (arch.kv_heads % it.gpu_count and it.gpu_count % arch.kv_heads):
        return "heads do not split over all GPUs"
    if it.gpu_model == "NVIDIA A10":
        return "A10 usable fraction 0.82"
    if preset.kv_cache_bytes_per_token != preset.kaito.bytes_per_token or arch.kv_heads < it.gpu_count:
        return "KV cache size or sharding"
    if preset.vllm_params.get("dtype") == "bfloat16" and it.compute_capability < 8.0:
        return "bfloat16-only preset on a GPU without bfloat16"
    return None


def test_our_copy_of_kaitos_estimator_matches_plan_module():
    for preset in HUB:
        for it in NVIDIA:
            ours = kaito_min_gpus(preset, it)
            if ours is None:
                with pytest.raises(PlanError):
                    kaito_estimator_min_gpus(preset, it)
            else:
                assert kaito_estimator_min_gpus(preset, it) == ours


def test_single_node_fit_agrees_with_kaitos_estimator_except_documented_differences():
    pairs, unexplained, explained = 0, [], []
    for preset in HUB:
        for it in NVIDIA:
            pairs += 1
            needed = kaito_min_gpus(preset, it, min(2048, preset.context_length))
            kaito_fits = needed is not None and needed <= it.gpu_count
            try:
                plan_inference(preset, it, max_model_len=min(2048, preset.context_length))
                ours = True
            except PlanError:
                ours = False
            if ours != kaito_fits:
                why = _explained(preset, it)
                (explained if why else unexplained).append((preset.name, it.name, kaito_fits, ours, why))
    assert pairs > 900
    assert not unexplained, unexplained
    assert len(explained) <= 0.02 * pairs, explained


# Kaito v0.6.2 published GPU counts, on 80 GB A100 nodes (the SKU family Kaito's examples use).
A100_NODES = ["Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4"]
# qwen2.5-coder-32b: Kaito v0.6.2 says 1 GPU / 70Gi, but Kaito HEAD's own estimator needs 2 x 80 GB at 2048
# tokens (61.03 GiB x 1.02 x 1.05 + 2.3 GiB > 0.84 x 80 GiB): we agree with HEAD.
PUBLISHED_COUNT_TOO_LOW = {"qwen2.5-coder-32b-instruct"}
# DeepSeek-R1-0528 / V3-0324: Kaito v0.6.2 lists GPUCountRequirement 1 / 960Gi for 641.3 GiB of FP8 weights,
# which is no GPU count (no single GPU holds them); no A100 node does either, several do.
PUBLISHED_COUNT_NOT_A_COUNT = {"deepseek-r1-0528", "deepseek-v3-0324"}


@pytest.mark.parametrize("preset", [p for p in HUB if p.kaito.gpu_count], ids=lambda p: p.name)
def test_kaitos_published_gpu_count_on_a100_80gb(preset):
    """Tolerance: our minimum GPU count on A100-80GB nodes equals Kaito's, or is lower when Kaito's figure is
    a whole node (llama-3.3-70b: 4 x 80 Gi published, 3 GPUs of weights+KV needed -> the 4-GPU node)."""
    ours = None
    for sku in A100_NODES:
        try:
            plan = plan_inference(preset, get_instance_type(sku), max_model_len=min(2048, preset.context_length))
        except DoesNotFit:
            continue
        ours = plan.tensor_parallel_size * plan.pipeline_parallel_size
        break
    if preset.name in PUBLISHED_COUNT_NOT_A_COUNT:
        assert ours is None and preset.distributed
        plan = plan_inference(preset, get_instance_type("Standard_NC96ads_A100_v4"), count=4, max_model_len=2048)
        assert plan.nodes > 1 and plan.tensor_parallel_size * plan.pipeline_parallel_size > preset.kaito.gpu_count
        return
    assert ours is not None
    if preset.name in PUBLISHED_COUNT_TOO_LOW:
        assert ours == 2 and kaito_min_gpus(preset, get_instance_type("Standard_NC48ads_A100_v4")) == 2
    else:
        assert ours == preset.kaito.gpu_count


@pytest.mark.parametrize("preset", [p for p in HUB if p.kaito.total_gpu_memory_gib and p.kaito.gpu_count == 1
                                    and p.name not in PUBLISHED_COUNT_NOT_A_COUNT], ids=lambda p: p.name)
def test_memory_within_40_percent_of_kaitos_published_total(preset):
    """Tolerance +-40%: Kaito's v0.6.2 totals were hand-set (phi-3.5-mini 8Gi < its 7.12 GiB of weights +
    runtime), ours add the 2.3 GiB runtime reserve and KV for 2048 tokens."""
    plan = plan_inference(preset, get_instance_type("Standard_NC40ads_H100_v5"),  # one 94 GiB GPU
                          max_model_len=min(2048, preset.context_length))
    assert plan.required_gib_per_gpu == pytest.approx(preset.kaito.total_gpu_memory_gib, rel=0.40)


# ----------------------------------------------------------------------------- one test per deliberate difference


def test_difference_1_kv_cache_splits_over_kv_heads_not_gpus():
    """gemma-3-4b has 4 KV heads: over tensor-parallel 8, vLLM replicates them, so each GPU holds 1/4 of the
    KV cache, not 1/8 as Kaito's estimator assumes."""
    preset = presets.get("gemma-3-4b-instruct")
    eight_small = from_node_labels({"nvidia.com/gpu.product": "NVIDIA-A16", "nvidia.com/gpu.count": "8",
                                    "nvidia.com/gpu.memory": "8192"})
    plan = plan_inference(preset, eight_small, max_model_len=8192)
    assert plan.tensor_parallel_size == 8
    assert plan.breakdown["kv_cache"] == pytest.approx(8192 * preset.kv_cache_bytes_per_token / 4 / GIB, abs=1e-3)


def test_difference_2_tensor_parallel_size_must_divide_the_heads():
    """phi-3-medium (40 heads, 10 KV heads) on 4 GPUs: Kaito passes tensor-parallel-size 4, which vLLM rejects
    (10 KV heads do not split over 4); we use 2 of the 4 GPUs and say so."""
    plan = plan_inference(presets.get("phi-3-medium-4k-instruct"), get_instance_type("g6.12xlarge"))
    assert plan.tensor_parallel_size == 2 and plan.gpus_per_node == 2
    assert any("do not split over 4 GPUs" in note for note in plan.notes)


def test_difference_3_a10_uses_kaitos_vllm_utilization():
    a10, l4 = get_instance_type("Standard_NV36ads_A10_v5"), get_instance_type("g6.xlarge")
    preset = presets.get("mistral-7b")
    assert plan_inference(preset, a10).available_gib_per_gpu == pytest.approx(24 * 0.82)
    assert plan_inference(preset, l4).available_gib_per_gpu == pytest.approx(24 * 0.84)


def test_difference_4_adapters_have_their_own_term():
    preset = presets.get("llama-3.1-8b-instruct")
    plan = plan_inference(preset, get_instance_type("Standard_NC24ads_A100_v4"), max_model_len=2048, adapters=2)
    per_adapter = sum(16 * (i + o) for i, o in [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096),
                                                 (4096, 14336), (4096, 14336), (14336, 4096)]) * 32 * 2 / GIB
    assert plan.breakdown["adapters"] == pytest.approx(2 * per_adapter, abs=1e-3)


def test_difference_5_float32_serving_doubles_16_bit_weights():
    plan = plan_inference(presets.get("smollm2-135m-instruct"), get_instance_type("g6.xlarge"))
    assert plan.dtype == "float32"
    assert plan.breakdown["weights"] == pytest.approx(2 * 0.25 * 1.02 * 1.05, abs=1e-3)
    assert plan.kv_cache_bytes_per_token == 2 * presets.get("smollm2-135m-instruct").kv_cache_bytes_per_token


def test_difference_6_default_max_model_len_is_the_longest_that_fits_not_2048():
    plan = plan_inference(presets.get("phi-4-mini-instruct"), get_instance_type("Standard_NC24ads_A100_v4"))
    assert plan.max_model_len == 131072  # Kaito would size for 2048 and let vLLM default to the full context

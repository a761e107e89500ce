"""The GPU instance catalogue (Kaito's Azure/AWS/Arc SKU tables) and bring-your-own nodes from GFD labels."""

from __future__ import annotations

import pytest

from runtime.sizing.catalog import (
    InstanceType,
    InvalidNodeLabels,
    UnknownInstanceType,
    from_node_labels,
    get_instance_type,
    instance_types,
)

# kaito-reference.md §1.4: SKU -> (GPUs, node GiB, GPU model, compute capability).
AZURE = {
    "Standard_NV36ads_A10_v5": (1, 24, "A10", 8.6),
    "Standard_NV72ads_A10_v5": (2, 48, "A10", 8.6),
    "Standard_NC24ads_A100_v4": (1, 80, "A100", 8.0),
    "Standard_NC48ads_A100_v4": (2, 160, "A100", 8.0),
    "Standard_NC96ads_A100_v4": (4, 320, "A100", 8.0),
    "Standard_ND96asr_A100_v4": (8, 320, "A100", 8.0),
    "Standard_ND96amsr_A100_v4": (8, 640, "A100", 8.0),
    "Standard_NC40ads_H100_v5": (1, 94, "H100", 9.0),
    "Standard_NC80adis_H100_v5": (2, 188, "H100", 9.0),
    "Standard_ND96isr_H100_v5": (8, 640, "H100", 9.0),
    "Standard_NCC40ads_H100_v5": (1, 94, "H100", 9.0),
    "Standard_ND96isr_H200_v5": (8, 1128, "H200", 9.0),
}
AWS = {
    "p4d.24xlarge": (8, 320, "A100", 8.0),
    "p4de.24xlarge": (8, 640, "A100", 8.0),
    "p5.48xlarge": (8, 640, "H100", 9.0),
    "p5e.48xlarge": (8, 1128, "H200", 9.0),
    "p5en.48xlarge": (8, 1128, "H200", 9.0),
    "g6.xlarge": (1, 24, "L4", 8.9),
    "g6.12xlarge": (4, 96, "L4", 8.9),
    "g6.48xlarge": (8, 192, "L4", 8.9),
    "g5.xlarge": (1, 24, "A10G", 8.6),
    "g5.12xlarge": (4, 96, "A10G", 8.6),
    "g5.48xlarge": (8, 192, "A10G", 8.6),
}
REMOVED = {
    "Standard_NC6s_v3": (1, 16, "V100", 7.0),
    "Standard_NC24s_v3": (4, 64, "V100", 7.0),
    "Standard_NC4as_T4_v3": (1, 16, "T4", 7.5),
    "Standard_NC64as_T4_v3": (4, 64, "T4", 7.5),
}


@pytest.mark.parametrize(("name", "expected"), [*AZURE.items(), *AWS.items(), *REMOVED.items()])
def test_catalogue_matches_kaitos_tables(name, expected):
    gpus, node_gib, model, capability = expected
    it = get_instance_type(name)
    assert (it.gpu_count, it.total_gpu_memory_gib, it.compute_capability) == (gpus, node_gib, capability)
    assert it.gpu_memory_gib == node_gib / gpus  # stored per GPU
    assert it.gpu_model == f"NVIDIA {model}"
    assert it.deprecated == (name in REMOVED)
    assert it.provider == ("aws" if name in AWS else "azure")


def test_catalogue_is_consistent():
    names = [it.name for it in instance_types()]
    assert len(names) == len(set(names))
    for it in instance_types():
        assert it.gpu_count >= 1 and it.gpu_memory_gib > 0
        assert (it.vendor == "nvidia") == (it.compute_capability > 0)
    assert get_instance_type("Standard_NC24ads_A100_v4").nvme
    assert get_instance_type("Standard_NC4_A2").provider == "arc"


def test_lookup_is_case_insensitive_and_unknown_names_get_suggestions():
    assert get_instance_type("standard_nc24ads_a100_v4").name == "Standard_NC24ads_A100_v4"
    with pytest.raises(UnknownInstanceType) as err:
        get_instance_type("Standard_NC24ads_A100")
    assert isinstance(err.value, KeyError)
    assert "Standard_NC24ads_A100_v4" in str(err.value) and "unknown instance type" in str(err.value)


GFD_A100 = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81920",
    "nvidia.com/cuda.compute.major": "8",
    "nvidia.com/cuda.compute.minor": "0",
    "kubernetes.io/hostname": "gpu-node-1",
}


def test_node_labels_describe_a_byo_node():
    it = from_node_labels(GFD_A100)
    assert isinstance(it, InstanceType)
    assert (it.provider, it.gpu_count, it.gpu_memory_gib, it.compute_capability) == ("byo", 8, 80.0, 8.0)
    assert it.total_gpu_memory_gib == 640 and it.name == "byo:NVIDIA-A100-SXM4-80GB"


@pytest.mark.parametrize(("product", "capability"), [("Tesla-T4", 7.5), ("NVIDIA-A10G", 8.6),
                                                     ("NVIDIA-A100-PCIE-40GB", 8.0), ("Mystery-GPU", 8.0)])
def test_compute_capability_from_the_product_when_gfd_has_no_cuda_labels(product, capability):
    labels = {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "16384"}
    assert from_node_labels(labels).compute_capability == capability


@pytest.mark.parametrize(("drop", "bad", "message"), [
    ("nvidia.com/gpu.product", None, "gpu.product is missing"),
    ("nvidia.com/gpu.memory", None, "gpu.memory is missing"),
    (None, ("nvidia.com/gpu.count", "eight"), "gpu.count='eight' is not an integer"),
    (None, ("nvidia.com/gpu.count", "0"), "no GPU"),
    (None, ("nvidia.com/cuda.compute.major", "x"), "cuda.compute.major"),
])
def test_bad_node_labels_name_the_label(drop, bad, message):
    labels = dict(GFD_A100)
    if drop:
        del labels[drop]
    if bad:
        labels[bad[0]] = bad[1]
    with pytest.raises(InvalidNodeLabels, match=message):
        from_node_labels(labels)

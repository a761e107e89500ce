"""GPU instance types: the Azure, AWS and Arc SKUs Kaito knows, plus bring-your-own nodes from GFD labels.

Pure data and the standard library only. Memory is GiB *per GPU* (Kaito's tables hold the node total; we
divide it by the GPU count once, here, so the planner never has to).

Sources: kaito-reference.md §1.4, which reads `pkg/sku/{azure,aws,arc}_sku_handler.go` of kaito-project/kaito.
Compute capabilities are NVIDIA's published figures for each GPU model (A100 8.0, A10/A10G/A2/A16 8.6, L4 8.9,
H100/H200 9.0, V100 7.0, T4 7.5, M60 5.2); non-NVIDIA accelerators get 0.0 and `vendor` set, and the planner
refuses them (our images are CUDA builds).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Provider = Literal["azure", "aws", "arc", "byo"]


@dataclass(frozen=True)
class InstanceType:
    """One node shape: how many GPUs, and how much memory each has."""

    name: str
    provider: Provider
    gpu_count: int
    gpu_memory_gib: float
    """Memory of ONE GPU, GiB."""
    gpu_model: str
    compute_capability: float
    """CUDA compute capability (major.minor); 0.0 for non-NVIDIA accelerators."""
    nvme: bool = False
    """Local NVMe disks (Kaito caches weights on them)."""
    deprecated: bool = False
    """Removed from Kaito's tables (V100, T4, M60...): still planned for, never suggested."""
    vendor: str = "nvidia"

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "provider": self.provider,
            "gpu_count": self.gpu_count,
            "gpu_memory_gib": self.gpu_memory_gib,
            "total_gpu_memory_gib": self.total_gpu_memory_gib,
            "gpu_model": self.gpu_model,
            "compute_capability": self.compute_capability,
            "nvme": self.nvme,
            "deprecated": self.deprecated,
            "vendor": self.vendor,
        }


class UnknownInstanceType(KeyError):
    """No catalogued instance type has this name; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class InvalidNodeLabels(ValueError):
    """Node labels that do not describe an NVIDIA GPU node (the message names the label)."""


# GPU model -> compute capability (NVIDIA CUDA GPUs table).
_CC = {"A100": 8.0, "A10": 8.6, "A10G": 8.6, "A2": 8.6, "A16": 8.6, "L4": 8.9, "H100": 9.0, "H200": 9.0,
       "V100": 7.0, "T4": 7.5, "M60": 5.2}


def _sku(name: str, provider: Provider, gpus: int, node_gib: float, model: str, nvme: bool = False,
         deprecated: bool = False) -> InstanceType:
    """Build an entry from Kaito's node-total figure."""
    vendor = "nvidia" if model in _CC else "amd" if model.startswith(("MI", "V620", "V520")) else "other"
    return InstanceType(
        name=name,
        provider=provider,
        gpu_count=gpus,
        gpu_memory_gib=node_gib / gpus,
        gpu_model=("NVIDIA " + model) if vendor == "nvidia" else model,
        compute_capability=_CC.get(model, 0.0),
        nvme=nvme,
        deprecated=deprecated,
        vendor=vendor,
    )


_AZURE = [
    _sku("Standard_NV36ads_A10_v5", "azure", 1, 24, "A10"),
    _sku("Standard_NV72ads_A10_v5", "azure", 2, 48, "A10"),
    _sku("Standard_NC24ads_A100_v4", "azure", 1, 80, "A100", nvme=True),
    _sku("Standard_NC48ads_A100_v4", "azure", 2, 160, "A100", nvme=True),
    _sku("Standard_NC96ads_A100_v4", "azure", 4, 320, "A100", nvme=True),
    _sku("Standard_ND96asr_A100_v4", "azure", 8, 320, "A100"),
    _sku("Standard_ND96amsr_A100_v4", "azure", 8, 640, "A100", nvme=True),
    _sku("Standard_NC40ads_H100_v5", "azure", 1, 94, "H100", nvme=True),
    _sku("Standard_NC80adis_H100_v5", "azure", 2, 188, "H100", nvme=True),
    _sku("Standard_ND96isr_H100_v5", "azure", 8, 640, "H100", nvme=True),
    _sku("Standard_NCC40ads_H100_v5", "azure", 1, 94, "H100"),
    _sku("Standard_ND96isr_H200_v5", "azure", 8, 1128, "H200", nvme=True),
    _sku("Standard_NG32ads_V620_v1", "azure", 1, 32, "V620"),
    _sku("Standard_NG32adms_V620_v1", "azure", 1, 32, "V620"),
    # Removed from Kaito's tables between v0.4 and v0.6 (compute capability < 8.0).
    _sku("Standard_NC6s_v3", "azure", 1, 16, "V100", deprecated=True),
    _sku("Standard_NC12s_v3", "azure", 2, 32, "V100", deprecated=True),
    _sku("Standard_NC24s_v3", "azure", 4, 64, "V100", deprecated=True),
    _sku("Standard_NC24rs_v3", "azure", 4, 64, "V100", deprecated=True),
    _sku("Standard_NC4as_T4_v3", "azure", 1, 16, "T4", deprecated=True),
    _sku("Standard_NC8as_T4_v3", "azure", 1, 16, "T4", deprecated=True),
    _sku("Standard_NC16as_T4_v3", "azure", 1, 16, "T4", deprecated=True),
    _sku("Standard_NC64as_T4_v3", "azure", 4, 64, "T4", deprecated=True),
    _sku("Standard_NV6", "azure", 1, 8, "M60", deprecated=True),
    _sku("Standard_NV12", "azure", 2, 16, "M60", deprecated=True),
    _sku("Standard_NV24", "azure", 4, 32, "M60", deprecated=True),
    _sku("Standard_NV12s_v3", "azure", 1, 8, "M60", deprecated=True),
    _sku("Standard_NV24s_v3", "azure", 2, 16, "M60", deprecated=True),
    _sku("Standard_NV48s_v3", "azure", 4, 32, "M60", deprecated=True),
    _sku("Standard_NV32as_v4", "azure", 1, 16, "MI25", deprecated=True),
]

_AWS = [
    _sku("p4d.24xlarge", "aws", 8, 320, "A100"),
    _sku("p4de.24xlarge", "aws", 8, 640, "A100"),
    _sku("p5.48xlarge", "aws", 8, 640, "H100", nvme=True),
    _sku("p5e.48xlarge", "aws", 8, 1128, "H200", nvme=True),
    _sku("p5en.48xlarge", "aws", 8, 1128, "H200", nvme=True),
    *[_sku(f"g6.{size}", "aws", 1, 24, "L4") for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")],
    *[_sku(f"gr6.{size}", "aws", 1, 24, "L4") for size in ("4xlarge", "8xlarge")],
    _sku("g6.12xlarge", "aws", 4, 96, "L4"),
    _sku("g6.24xlarge", "aws", 4, 96, "L4"),
    _sku("g6.48xlarge", "aws", 8, 192, "L4"),
    *[_sku(f"g5.{size}", "aws", 1, 24, "A10G") for size in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")],
    _sku("g5.12xlarge", "aws", 4, 96, "A10G"),
    _sku("g5.24xlarge", "aws", 4, 96, "A10G"),
    _sku("g5.48xlarge", "aws", 8, 192, "A10G"),
    *[_sku(f"g4ad.{size}", "aws", 1, 8, "V520") for size in ("xlarge", "2xlarge", "4xlarge")],
    _sku("g4ad.8xlarge", "aws", 2, 16, "V520"),
    _sku("g4ad.16xlarge", "aws", 4, 32, "V520"),
]

_ARC = [
    _sku("Standard_NK6", "arc", 1, 8, "T4"),
    _sku("Standard_NK12", "arc", 2, 16, "T4"),
    *[_sku(f"Standard_NC{n}_{g}", "arc", 1 if n <= 8 else 2, 16 if n <= 8 else 32, g)
      for g in ("A2", "A16") for n in (4, 8, 16, 32)],
]

_CATALOGUE: dict[str, InstanceType] = {it.name.lower(): it for it in (*_AZURE, *_AWS, *_ARC)}


def instance_types() -> list[InstanceType]:
    """Every catalogued instance type, in catalogue order (Azure, AWS, Arc)."""
    return list(_CATALOGUE.values())


def get_instance_type(name: str) -> InstanceType:
    """The catalogued instance type called `name` (case-insensitive)."""
    try:
        return _CATALOGUE[name.lower()]
    except KeyError:
        names = [it.name for it in _CATALOGUE.values()]
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
        raise UnknownInstanceType(f"unknown instance type {name!r}{hint}") from None


_LABEL_PRODUCT = "nvidia.com/gpu.product"
_LABEL_COUNT = "nvidia.com/gpu.count"
_LABEL_MEMORY = "nvidia.com/gpu.memory"
_LABEL_MAJOR = "nvidia.com/cuda.compute.major"
_LABEL_MINOR = "nvidia.com/cuda.compute.minor"


def _int_label(labels: Mapping[str, str], key: str) -> int:
    if key not in labels:
        raise InvalidNodeLabels(f"node label {key} is missing (set by NVIDIA GPU feature discovery)")
    try:
        value = int(str(labels[key]).strip())
    except ValueError:
        raise InvalidNodeLabels(f"node label {key}={labels[key]!r} is not an integer") from None
    if value < 0:
        raise InvalidNodeLabels(f"node label {key}={value} must not be negative")
    return value


def from_node_labels(labels: Mapping[str, str]) -> InstanceType:
    """Describe a bring-your-own node from its NVIDIA GPU feature discovery labels (Kaito's
    `GetGPUConfigFromNodeLabels`): product, count, memory (MiB per GPU) and CUDA compute major/minor.

    The compute labels are optional (older GFD versions lack them): then we look the product up in the GPU
    models we know, else assume 8.0.
    """
    product = str(labels.get(_LABEL_PRODUCT, "")).strip()
    if not product:
        raise InvalidNodeLabels(f"node label {_LABEL_PRODUCT} is missing (set by NVIDIA GPU feature discovery)")
    count = _int_label(labels, _LABEL_COUNT)
    if count < 1:
        raise InvalidNodeLabels(f"node label {_LABEL_COUNT}={count}: the node has no GPU")
    memory_mib = _int_label(labels, _LABEL_MEMORY)
    if memory_mib < 1:
        raise InvalidNodeLabels(f"node label {_LABEL_MEMORY}={memory_mib}: GPU memory must be positive (MiB)")
    if _LABEL_MAJOR in labels:
        major = _int_label(labels, _LABEL_MAJOR)
        minor = _int_label(labels, _LABEL_MINOR) if _LABEL_MINOR in labels else 0
        capability = float(f"{major}.{minor}")
    else:
        # Longest model name first, so "A100" wins over "A10".
        known = sorted(_CC, key=len, reverse=True)
        words = product.upper().replace("_", "-").split("-")
        capability = next((_CC[m] for m in known if m in words), 8.0)
    return InstanceType(
        name=f"byo:{product}",
        provider="byo",
        gpu_count=count,
        gpu_memory_gib=round(memory_mib / 1024, 3),
        gpu_model=product,
        compute_capability=capability,
    )

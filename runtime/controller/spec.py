"""The Workspace custom resource as typed objects, and its validation.

Kaito's Workspace (`kaito.sh/v1alpha1` and `v1beta1`) keeps its fields at the top level (no `spec:`): `resource`,
`inference`, `tuning`. `parse_workspace` turns a manifest dict into a `Workspace`; every problem it finds is
reported with the field path it concerns (`inference.adapters[0].strength: ...`), all at once, so a user fixes a
manifest in one round. Pure: no cluster, no I/O. The sizing check lives in `check_fit` because it needs the
sizing package and is the one rule an annotation can turn into a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

GROUP = "kaito.sh"
VERSIONS = ("v1alpha1", "v1beta1")
KIND = "Workspace"
PLURAL = "workspaces"
STORAGE_VERSION = "v1beta1"

# Annotations Kaito defines (api/v1beta1/labels.go) that change what we render or check.
ANNOTATION_RUNTIME = "kaito.sh/runtime"
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
LABEL_WORKSPACE = "kaito.sh/workspace"

# v1alpha1 defaults the instance type; v1beta1 leaves it empty for bring-your-own nodes.
V1ALPHA1_DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_METHODS = ("lora", "qlora")


class _Model(BaseModel):
    # Unknown fields are errors: a misspelt `labelSelecter` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, alias="matchExpressions")


class ResourceSpec(_Model):
    """Where the workload runs."""

    instance_type: str | None = Field(None, alias="instanceType")
    """GPU instance type (node label node.kubernetes.io/instance-type); empty for bring-your-own nodes."""
    count: int = Field(1, ge=1)
    """Number of nodes (deprecated in v1beta1; the sizing plan decides)."""
    label_selector: LabelSelector = Field(alias="labelSelector")
    """Nodes the workload may run on (required, as in Kaito)."""
    preferred_nodes: list[str] = Field(default_factory=list, alias="preferredNodes")


class PresetOptions(_Model):
    image: str | None = None
    """Image to run instead of <registry>/kaito-<preset>:<tag> (private presets)."""
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    model_access_secret: str | None = Field(None, alias="modelAccessSecret")
    """Secret with key HF_TOKEN, for gated models."""


class PresetRef(_Model):
    name: str
    access_mode: Literal["public", "private"] | None = Field(None, alias="accessMode")
    preset_options: PresetOptions = Field(default_factory=PresetOptions, alias="presetOptions")


class DataSource(_Model):
    """Kaito's DataSource: where adapters or training data come from."""

    name: str | None = None
    urls: list[str] = Field(default_factory=list)
    image: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    volume_source: dict[str, Any] | None = Field(None, alias="volumeSource")
    """A core/v1 VolumeSource (persistentVolumeClaim, azureFile, ...), passed through as is."""


class DataDestination(_Model):
    image: str | None = None
    image_push_secret: str | None = Field(None, alias="imagePushSecret")
    volume_source: dict[str, Any] | None = Field(None, alias="volumeSource")


class AdapterSpec(_Model):
    source: DataSource
    strength: str | None = None
    """A number in 0..1 written as a string (Kaito's type); None means 1.0."""

    @property
    def strength_value(self) -> float:
        return float(self.strength) if self.strength is not None else 1.0


class InferenceSpec(_Model):
    preset: PresetRef | None = None
    config: str | None = None
    """Name of a ConfigMap with key inference_config.yaml; None renders our default one."""
    adapters: list[AdapterSpec] = Field(default_factory=list)
    template: dict[str, Any] | None = None
    """A PodTemplateSpec to run instead of a preset (no sizing, no probes added)."""


class TuningSpec(_Model):
    preset: PresetRef
    method: str = "qlora"
    """lora or qlora (a string here so the error for other values can name the field)."""
    config: str | None = None
    """Name of a ConfigMap with key training_config.yaml; None renders Kaito's defaults for the method."""
    input: DataSource
    output: DataDestination


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class Workspace(_Model):
    api_version: str = Field(alias="apiVersion")
    kind: Literal["Workspace"]
    metadata: Metadata
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def preset_name(self) -> str | None:
        if self.tuning is not None:
            return self.tuning.preset.name
        if self.inference is not None and self.inference.preset is not None:
            return self.inference.preset.name
        return None

    @property
    def instance_type(self) -> str | None:
        if self.resource.instance_type:
            return self.resource.instance_type
        return V1ALPHA1_DEFAULT_INSTANCE_TYPE if self.api_version.endswith("/v1alpha1") else None

    def annotation(self, key: str) -> str | None:
        return self.metadata.annotations.get(key)

    @property
    def bypass_resource_checks(self) -> bool:
        return ANNOTATION_BYPASS_RESOURCE_CHECKS in self.metadata.annotations


@dataclass(frozen=True)
class Problem:
    path: str
    """Dotted field path, e.g. inference.adapters[0].source.name."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class WorkspaceInvalid(ValueError):
    """The manifest is not a valid Workspace; `problems` lists every finding with its field path."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid Workspace: " + "; ".join(str(p) for p in problems))


@dataclass
class FitReport:
    """The outcome of the sizing check: a plan, or problems (errors, or warnings under the bypass annotation)."""

    plan: Any | None = None
    """runtime.sizing.plan.InferencePlan (or TuningPlan) when sizing could plan."""
    instance: Any | None = None
    """runtime.sizing.catalog.InstanceType when the instance type is known."""
    warnings: list[str] = field(default_factory=list)


def _path(loc: tuple) -> str:
    # Pydantic locations ("inference", "adapters", 0, "source") -> "inference.adapters[0].source".
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            alias = str(part)
            out += f".{alias}" if out else alias
    return out


def parse_workspace(obj: dict[str, Any]) -> Workspace:
    """Parse and validate a Workspace manifest (everything except the sizing check). Raises WorkspaceInvalid."""
    if not isinstance(obj, dict):
        raise WorkspaceInvalid([Problem("", f"a Workspace must be a mapping, got {type(obj).__name__}")])
    api_version = obj.get("apiVersion")
    if api_version not in {f"{GROUP}/{v}" for v in VERSIONS}:
        raise WorkspaceInvalid([Problem("apiVersion", f"must be one of {', '.join(f'{GROUP}/{v}' for v in VERSIONS)}, "
                                                      f"got {api_version!r}")])
    if obj.get("kind") != KIND:
        raise WorkspaceInvalid([Problem("kind", f"must be Workspace, got {obj.get('kind')!r}")])
    try:
        ws = Workspace.model_validate(obj)
    except PydanticValidationError as err:
        problems = [Problem(_path(e["loc"]), _pydantic_message(e)) for e in err.errors()]
        raise WorkspaceInvalid(problems) from None
    problems = _check_rules(ws)
    if problems:
        raise WorkspaceInvalid(problems)
    return ws


def _pydantic_message(error: dict) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return error["msg"]


def _check_rules(ws: Workspace) -> list[Problem]:
    """Kaito's webhook rules (api/v1beta1/workspace_validation.go) that need no sizing."""
    import presets

    problems: list[Problem] = []
    if not _DNS1123_LABEL.match(ws.name) or len(ws.name) > 63:
        problems.append(Problem("metadata.name", f"{ws.name!r} is not a DNS-1123 label (it names the workload)"))
    if (ws.inference is None) == (ws.tuning is None):
        which = "both are set" if ws.inference is not None else "neither is set"
        problems.append(Problem("inference/tuning", f"exactly one of inference or tuning must be set; {which}"))

    runtime = ws.annotation(ANNOTATION_RUNTIME)
    if runtime is not None and runtime not in ("vllm", "transformers"):
        problems.append(Problem(f"metadata.annotations[{ANNOTATION_RUNTIME}]",
                                f"must be vllm or transformers, got {runtime!r}"))

    if ws.inference is not None:
        problems += _check_inference(ws, ws.inference, presets)
    if ws.tuning is not None:
        problems += _check_tuning(ws, ws.tuning, presets)
    return problems


def _lookup_preset(name: str, path: str, presets, problems: list[Problem]):
    try:
        return presets.get(name)
    except presets.UnknownPreset as err:
        problems.append(Problem(path, str(err)))
        return None


def _check_inference(ws: Workspace, inference: InferenceSpec, presets) -> list[Problem]:
    problems: list[Problem] = []
    if (inference.preset is None) == (inference.template is None):
        problems.append(Problem("inference.preset", "exactly one of inference.preset or inference.template must be set"))
    preset = None
    if inference.preset is not None:
        preset = _lookup_preset(inference.preset.name, "inference.preset.name", presets, problems)
    runtime = runtime_of(ws, preset) if preset is not None else None
    names: set[str] = set()
    for i, adapter in enumerate(inference.adapters):
        base = f"inference.adapters[{i}]"
        name = adapter.source.name
        if not name or not _DNS1123_LABEL.match(name) or len(name) > 63:
            problems.append(Problem(f"{base}.source.name", f"{name!r} is not a DNS-1123 label (lower-case letters, "
                                                           "digits and '-', at most 63 characters)"))
        elif name in names:
            problems.append(Problem(f"{base}.source.name", f"adapter name {name!r} is used twice"))
        names.add(name or "")
        if not adapter.source.image:
            problems.append(Problem(f"{base}.source.image", "an adapter needs an image"))
        if adapter.strength is not None:
            try:
                value = float(adapter.strength)
            except ValueError:
                value = None
            if value is None or not 0.0 <= value <= 1.0:
                problems.append(Problem(f"{base}.strength", f"must be a number in 0..1, got {adapter.strength!r}"))
            elif value != 1.0 and preset is not None and runtime == "vllm":
                problems.append(Problem(f"{base}.strength", "the vllm runtime serves adapters at full strength "
                                        "(Kaito issue #998); set the annotation kaito.sh/runtime: transformers for "
                                        "weighted adapters"))
    if inference.adapters and preset is not None and not preset.lora_serving:
        problems.append(Problem("inference.adapters", f"preset {preset.name!r} does not support LoRA adapters"))
    return problems


def _check_tuning(ws: Workspace, tuning: TuningSpec, presets) -> list[Problem]:
    problems: list[Problem] = []
    preset = _lookup_preset(tuning.preset.name, "tuning.preset.name", presets, problems)
    if tuning.method not in _METHODS:
        problems.append(Problem("tuning.method", f"must be lora or qlora, got {tuning.method!r}"))
    elif preset is not None and not preset.supports_tuning(tuning.method):  # type: ignore[arg-type]
        problems.append(Problem("tuning.method", f"preset {preset.name!r} does not support {tuning.method} tuning"))
    sources = [s for s, present in (("urls", bool(tuning.input.urls)), ("image", bool(tuning.input.image)),
                                    ("volumeSource", tuning.input.volume_source is not None)) if present]
    if len(sources) != 1:
        detail = f"got {', '.join(sources)}" if sources else "got none"
        problems.append(Problem("tuning.input", f"exactly one of urls, image or volumeSource must be set; {detail}"))
    if tuning.input.name is not None and not _DNS1123_LABEL.match(tuning.input.name):
        problems.append(Problem("tuning.input.name", f"{tuning.input.name!r} is not a DNS-1123 label"))
    out = tuning.output
    if (out.image is None) == (out.volume_source is None):
        problems.append(Problem("tuning.output", "exactly one of image or volumeSource must be set"))
    if out.image and not out.image_push_secret:
        problems.append(Problem("tuning.output.imagePushSecret", "an output image needs imagePushSecret (a "
                                                                 "kubernetes.io/dockerconfigjson Secret)"))
    if ws.resource.count != 1:
        problems.append(Problem("resource.count", f"tuning runs on one node; got count {ws.resource.count}"))
    return problems


def runtime_of(ws: Workspace, preset) -> str:
    """The inference runtime: the kaito.sh/runtime annotation, else the preset's preferred runtime."""
    return ws.annotation(ANNOTATION_RUNTIME) or preset.runtimes[0]


def check_fit(ws: Workspace, preset) -> FitReport:
    """Plan the workspace with runtime.sizing; a preset that does not fit is an error at resource.instanceType.

    `kaito.sh/bypass-resource-checks` turns that error into a warning (Kaito's behaviour). Without an instance
    type (bring-your-own nodes) nothing is planned: a warning says so.
    """
    from runtime.sizing import catalog
    from runtime.sizing import plan as sizing

    report = FitReport()
    instance_name = ws.instance_type
    if not instance_name:
        report.warnings.append("resource.instanceType is empty (bring-your-own nodes): sizing check skipped")
        return report
    try:
        report.instance = catalog.get_instance_type(instance_name)
    except catalog.UnknownInstanceType as err:
        message = _err_text(err)
        if ws.bypass_resource_checks:
            report.warnings.append(f"resource.instanceType: {message}; sizing skipped")
            return report
        raise WorkspaceInvalid([Problem("resource.instanceType", message)]) from None
    try:
        if ws.tuning is not None:
            report.plan = sizing.plan_tuning(preset, report.instance, ws.tuning.method)
        else:
            adapters = len(ws.inference.adapters) if ws.inference else 0
            report.plan = sizing.plan_inference(preset, report.instance, count=ws.resource.count,
                                                runtime=runtime_of(ws, preset), adapters=adapters)
    except sizing.PlanError as err:
        # DoesNotFit's text carries the shortfall per GPU and the smallest instance type that fits.
        message = f"preset {preset.name!r} on {instance_name} x{ws.resource.count}: {_err_text(err)}"
        if ws.bypass_resource_checks:
            report.warnings.append(f"resource.instanceType: {message} [bypassed by {ANNOTATION_BYPASS_RESOURCE_CHECKS}]")
            return report
        raise WorkspaceInvalid([Problem("resource.instanceType", message)]) from None
    return report


def _err_text(err: Exception) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


@dataclass(frozen=True)
class Resolved:
    """A validated Workspace with its preset and sizing report: everything `render` needs."""

    workspace: Workspace
    preset: Any | None
    fit: FitReport


def resolve(obj: dict[str, Any]) -> Resolved:
    """parse_workspace + preset lookup + check_fit. Raises WorkspaceInvalid naming the field at fault."""
    import presets

    ws = parse_workspace(obj)
    name = ws.preset_name
    if name is None:  # inference.template: nothing to look up or size
        return Resolved(ws, None, FitReport())
    preset = presets.get(name)
    return Resolved(ws, preset, check_fit(ws, preset))

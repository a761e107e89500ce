"""The seed's tuning Workspace, rendered: what the Job's pod would really run.

The Workspace below is the seed's example as a user writes it (Kaito's examples/fine-tuning phi-3 QLoRA with
`input.urls` and an output image), on `Standard_NC6s_v3`: one V100 16 GB, compute capability 7.0, no bfloat16.
"""

from __future__ import annotations

import copy

import yaml

import presets
from runtime.controller import render, spec
from runtime.tuning import config as tuning_config

SEED = yaml.safe_load("""
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-tuning-phi-3
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      app: tuning-phi-3
tuning:
  preset:
    name: phi-3-mini-128k-instruct
  method: qlora
  input:
    urls:
      - "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
  output:
    image: "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1" # Tuning Output ACR Path
    imagePushSecret: ACR_REGISTRY_SECRET_HERE
""")


def rendered_seed(obj: dict | None = None) -> dict[str, dict]:
    resolved = spec.resolve(copy.deepcopy(obj or SEED))
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit, render.RenderSettings())
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def training_config(objs: dict[str, dict]) -> dict:
    return yaml.safe_load(objs["ConfigMap/workspace-tuning-phi-3-qlora-params"]["data"][render.TRAINING_CONFIG_KEY])


def test_the_seed_job_checkpoints_so_a_restarted_trainer_resumes():
    body = training_config(rendered_seed())["training_config"]
    train = body["TrainingArguments"]
    assert train["save_strategy"] == "steps"
    assert train["save_steps"] == tuning_config.CHECKPOINT_EVERY_STEPS > 0
    assert train["save_total_limit"] == tuning_config.CHECKPOINTS_KEPT > 1
    assert train["output_dir"] == render.RESULTS_DIR  # the results volume, which survives a container restart
    assert body["DataCollator"]["mlm"] is False


def test_the_rendered_config_is_the_trainers_own_defaults():
    """One source: the trainer reading the rendered file gets what it would use with no file at all, except the
    fields the render fills from the Workspace and its plan."""
    body = training_config(rendered_seed())["training_config"]
    from_file = tuning_config.build_config(body, "qlora").model_dump()
    built_in = tuning_config.build_config({}, "qlora").model_dump()
    filled = {("LoraConfig", "target_modules"), ("TrainingArguments", "output_dir"), ("ModelConfig", "torch_dtype"),
              ("QuantizationConfig", "bnb_4bit_compute_dtype")}
    for section, fields in from_file.items():
        if not isinstance(fields, dict):
            assert fields == built_in[section]
            continue
        for key in set(fields) | set(built_in[section]):
            if (section, key) not in filled:
                assert fields.get(key) == built_in[section].get(key), f"{section}.{key}"


def test_the_v100_gets_float16_and_an_a100_bfloat16():
    body = training_config(rendered_seed())["training_config"]
    assert body["ModelConfig"]["torch_dtype"] == "float16"
    assert body["QuantizationConfig"]["bnb_4bit_compute_dtype"] == "float16"
    on_a100 = copy.deepcopy(SEED)
    on_a100["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    body = training_config(rendered_seed(on_a100))["training_config"]
    assert body["ModelConfig"]["torch_dtype"] == "bfloat16" == body["QuantizationConfig"]["bnb_4bit_compute_dtype"]


def test_the_trainer_keeps_the_rendered_float16_on_the_v100():
    body = training_config(rendered_seed())["training_config"]
    config = tuning_config.build_config(body, "qlora")
    said = tuning_config.resolve_dtypes(config, gpu=True, native_bf16=False, device="cuda:0 (Tesla V100)")
    assert said is None and config.ModelConfig.torch_dtype == "float16"


def test_every_container_of_the_seed_job_runs_our_preset_image():
    pod = rendered_seed()["Job/workspace-tuning-phi-3"]["spec"]["template"]["spec"]
    ours = render.preset_image(presets.get("phi-3-mini-128k-instruct"), render.RenderSettings())
    containers = pod["initContainers"] + pod["containers"]
    assert {c["image"] for c in containers} == {ours}
    assert ours.startswith(render.RenderSettings().registry + "/")
    downloader = pod["initContainers"][0]
    assert downloader["command"] == ["kaito", "data", "fetch", "--to", render.DATA_DIR, SEED["tuning"]["input"]["urls"][0]]

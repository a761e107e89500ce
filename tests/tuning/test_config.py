"""training_config.yaml: Kaito's defaults, precedence, and every rejection naming its field."""

from __future__ import annotations

import pytest

from runtime.tuning.config import ConfigError, build_config, load_config, resolve_dtypes
from tests.tuning.helpers import write_config


@pytest.fixture(autouse=True)
def _root(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_OUTPUT_ROOT", str(tmp_path))


def test_qlora_defaults_are_kaitos(tmp_path):
    cfg = build_config(method="qlora")
    q = cfg.QuantizationConfig
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert cfg.LoraConfig == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
    assert cfg.ModelConfig.local_files_only
    # No dtype by default: the render writes the plan's, the trainer picks for its device otherwise.
    assert cfg.ModelConfig.torch_dtype is None and q.bnb_4bit_compute_dtype is None
    assert cfg.TrainingArguments["per_device_train_batch_size"] == 1
    assert cfg.TrainingArguments["num_train_epochs"] == 3
    assert cfg.DatasetConfig.train_test_split == 1 and cfg.DatasetConfig.shuffle_dataset
    assert cfg.output_dir == tmp_path.resolve() / "results"


def test_lora_defaults_do_not_quantize():
    cfg = build_config(method="lora")
    assert not cfg.QuantizationConfig.enabled
    assert cfg.LoraConfig["r"] == 8


def test_file_then_flags_override_defaults(tmp_path):
    path = write_config(tmp_path / "c.yaml", {
        "LoraConfig": {"r": 16, "target_modules": ["q_proj"]},
        "TrainingArguments": {"max_steps": 7, "learning_rate": 1e-3},
        "DatasetConfig": {"shuffle_seed": 5},
    })
    cfg = load_config(path, "qlora", {"TrainingArguments": {"max_steps": 3}})
    assert cfg.LoraConfig == {"r": 16, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj"]}
    assert cfg.TrainingArguments["max_steps"] == 3  # flag wins
    assert cfg.TrainingArguments["learning_rate"] == 1e-3  # file wins over defaults
    assert cfg.DatasetConfig.shuffle_seed == 5
    assert cfg.QuantizationConfig.load_in_4bit  # untouched default


def test_method_inferred_from_file(tmp_path):
    path = write_config(tmp_path / "c.yaml", {"QuantizationConfig": {"load_in_4bit": False}})
    assert load_config(path).method == "lora"
    assert load_config(None).method == "qlora"


@pytest.mark.parametrize(
    ("body", "method", "field"),
    [
        ({"Bogus": {}}, None, "Bogus"),
        ({"ModelConfig": {"torch_dtyp": "float32"}}, None, "ModelConfig.torch_dtyp"),
        ({"QuantizationConfig": {"load_in_4bit": True, "load_in_8bit": True}}, "qlora", "load_in_8bit"),
        ({"QuantizationConfig": {"load_in_4bit": True}}, "lora", "QuantizationConfig"),
        ({"QuantizationConfig": {"load_in_4bit": False}}, "qlora", "QuantizationConfig"),
        ({"TrainingArguments": {"output_dir": "/etc/results"}}, None, "TrainingArguments.output_dir"),
        ({"TrainingArguments": {"output_dir": "../../escape"}}, None, "TrainingArguments.output_dir"),
        ({"DatasetConfig": {"train_test_split": 1.5}}, None, "DatasetConfig.train_test_split"),
        ({"DatasetConfig": {"dataset_extension": "xml"}}, None, "DatasetConfig.dataset_extension"),
        ({"LoraConfig": ["r", 8]}, None, "LoraConfig"),
        ({}, "dora", "dora"),
    ],
)
def test_rejections_name_the_field(body, method, field):
    with pytest.raises(ConfigError) as err:
        build_config(body, method)
    assert field in str(err.value)


def test_file_shape_errors(tmp_path):
    bad_top = tmp_path / "top.yaml"
    bad_top.write_text("ModelConfig: {}\n")
    with pytest.raises(ConfigError, match="training_config"):
        load_config(bad_top)
    extra = tmp_path / "extra.yaml"
    extra.write_text("training_config: {}\nother: 1\n")
    with pytest.raises(ConfigError, match="other"):
        load_config(extra)
    broken = tmp_path / "broken.yaml"
    broken.write_text("training_config: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_relative_output_dir_is_under_root(tmp_path):
    cfg = build_config({"TrainingArguments": {"output_dir": "runs/a"}})
    assert cfg.output_dir == tmp_path.resolve() / "runs" / "a"


V100 = {"gpu": True, "native_bf16": False, "device": "cuda:0 (Tesla V100, compute capability 7.0)"}
A100 = {"gpu": True, "native_bf16": True, "device": "cuda:0 (A100, compute capability 8.0)"}
AVX2_CPU = {"gpu": False, "native_bf16": False, "device": "the CPU (without AVX512_BF16/AMX)"}
AMX_CPU = {"gpu": False, "native_bf16": True, "device": "the CPU (with AVX512_BF16/AMX)"}


@pytest.mark.parametrize(("device", "picked"), [(V100, "float16"), (A100, "bfloat16"), (AVX2_CPU, "float32"),
                                                (AMX_CPU, "bfloat16")])
def test_unset_dtypes_follow_what_the_device_runs_fast(device, picked):
    cfg = build_config(method="qlora")
    line, overridden = resolve_dtypes(cfg, **device)
    assert cfg.ModelConfig.torch_dtype == picked == cfg.QuantizationConfig.bnb_4bit_compute_dtype
    assert not overridden
    assert line == (f"dtype for {device['device']}: ModelConfig.torch_dtype {picked} (not set); "
                    f"QuantizationConfig.bnb_4bit_compute_dtype {picked} (not set)")


def test_bf16_asked_on_a_gpu_without_it_falls_back_to_fp16_with_one_line():
    cfg = build_config({"ModelConfig": {"torch_dtype": "bfloat16"},
                        "QuantizationConfig": {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16"}}, "qlora")
    line, overridden = resolve_dtypes(cfg, **V100)
    assert overridden and "\n" not in line
    assert cfg.ModelConfig.torch_dtype == "float16" == cfg.QuantizationConfig.bnb_4bit_compute_dtype
    assert "ModelConfig.torch_dtype float16 (bfloat16 asked, which this GPU lacks)" in line
    assert "Tesla V100" in line


@pytest.mark.parametrize("device", [A100, AVX2_CPU, AMX_CPU])
def test_an_asked_dtype_is_kept_where_the_device_can_run_it(device):
    cfg = build_config({"ModelConfig": {"torch_dtype": "bfloat16"}}, "lora")
    assert resolve_dtypes(cfg, **device) is None
    assert cfg.ModelConfig.torch_dtype == "bfloat16"


def test_lora_leaves_the_unused_compute_dtype_alone():
    cfg = build_config({"ModelConfig": {"torch_dtype": "float32"}}, "lora")
    assert resolve_dtypes(cfg, **V100) is None
    assert cfg.QuantizationConfig.bnb_4bit_compute_dtype is None


def test_native_bf16_is_read_from_the_cpu_flags():
    from runtime.tuning.trainer import cpu_has_native_bf16

    assert not cpu_has_native_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("model name\t: avx512_bf16 in a name, not a flag\n")


def test_a_taken_metrics_port_does_not_stop_training(caplog):
    import socket

    from runtime.tuning.status import Metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = Metrics(taken.getsockname()[1], addr="127.0.0.1")
    metrics.step.set(3)  # the gauges still work; only the endpoint is missing
    metrics.close()
    assert "no Prometheus metrics: port" in caplog.text and "training goes on" in caplog.text

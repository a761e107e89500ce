"""Tuning benchmark: trained tokens/s and peak RSS of our trainer vs plain `transformers.Trainer` + peft.

    python -m benchmarks.tuning.run [--steps 16] [--threads 1] [--max-length 512]

SmolLM2-135M-Instruct on CPU, one torch thread by default (the machine is shared: keep it short). Every
configuration runs in its own process, so peak RSS (`ru_maxrss` from wait4) is that run's alone:
- baseline: Kaito's default qlora config (NF4, double quant, bf16 compute, bf16 base, r=8, alpha=8, dropout 0,
  batch 1), the preset's seven target modules, full-sequence loss, `DataCollatorForLanguageModeling`, plain
  `Trainer` (its own defaults otherwise, as Kaito's fine_tuning.py before TRL);
- ours: `runtime.tuning.trainer.run` with the same method defaults, with and without packing (TRL's "bfd",
  documents kept apart by position ids, and "wrapped", one causal stream), qlora and lora.
tokens/s = non-padding input tokens per second of training, from the per-step log, after the first
`--warmup` steps; the median over `--repeat` round-robin rounds (the machine is noisy), peak RSS the highest.
Writes benchmarks/results/tuning-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
PRESET = "smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("the capital of france is paris and italy rome spain madrid model train data token answer question "
         "cluster node gpu memory adapter image registry workspace preset kubernetes job pod quickly slowly "
         "because which where when small large fine tune learn weight layer head attention").split()
CONFIGS = {
    "baseline-qlora": {"kind": "baseline"},
    "ours-qlora": {"kind": "ours", "method": "qlora", "packing": False},
    "ours-qlora-packed": {"kind": "ours", "method": "qlora", "packing": True},
    "ours-qlora-wrapped": {"kind": "ours", "method": "qlora", "packing": True, "strategy": "wrapped"},
    "ours-lora": {"kind": "ours", "method": "lora", "packing": False},
    "ours-lora-packed": {"kind": "ours", "method": "lora", "packing": True},
}


def make_data(path: Path, rows: int = 96, seed: int = 0) -> Path:
    """Chats of mixed lengths (20-330 words), the shape of instruction data such as dolly."""
    rng = random.Random(seed)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    with path.open("w") as f:
        for _ in range(rows):
            chat = [{"role": "user", "content": sentence(rng.randint(10, 80))},
                    {"role": "assistant", "content": sentence(rng.randint(10, 250))}]
            f.write(json.dumps({"messages": chat}) + "\n")
    return path


def _throughput(points: list[tuple[float, int]], warmup: int) -> tuple[float, int, float]:
    """(tokens/s, tokens, seconds) between the warm-up step and the last step; points are (time, tokens seen)."""
    (t0, n0), (t1, n1) = points[warmup - 1], points[-1]
    return (n1 - n0) / (t1 - t0), n1 - n0, t1 - t0


def worker_ours(spec: dict, data: Path, work: Path, args) -> dict:
    from runtime.tuning.trainer import TuneOptions, run

    os.environ["KAITO_OUTPUT_ROOT"] = str(work)
    out = work / "out"
    config = work / "training_config.yaml"
    config.write_text(json.dumps({"training_config": {"TrainingArguments": {
        "packing_strategy": spec.get("strategy", "bfd")}}}))  # JSON is YAML
    code = run(TuneOptions(preset=PRESET, method=spec["method"], data=[str(data)], output_dir=str(out),
                           config=str(config),
                           max_steps=args.steps, packing=spec["packing"], max_length=args.max_length,
                           save_steps=10_000, metrics_port=0, seed=42))
    assert code == 0, code
    logs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    points = [(e["time"], e["num_input_tokens_seen"]) for e in logs if e["event"] == "log" and "loss" in e]
    return {"points": points}


def worker_baseline(data: Path, work: Path, args) -> dict:
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from runtime.models import ensure_model

    folder = ensure_model("smollm2")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.pad_token or tok.eos_token
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                             bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=torch.bfloat16,
                                                 device_map="cpu")
    model = prepare_model_for_kbit_training(model)
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    # The same order as ours (DatasetConfig.shuffle_seed 42, then the trainer's sampler seed 42): same rows per step.
    table = datasets.load_dataset("json", data_files=str(data), split="train").shuffle(seed=42)
    table = table.map(lambda r: tok(tok.apply_chat_template(r["messages"], tokenize=False), truncation=True,
                                    max_length=args.max_length, add_special_tokens=False),
                      remove_columns=table.column_names)
    points: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                points.append((time.time(), state.num_input_tokens_seen))

    targs = TrainingArguments(output_dir=str(work / "out"), per_device_train_batch_size=1, max_steps=args.steps,
                              logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=42,
                              include_num_input_tokens_seen="non_padding", disable_tqdm=True,
                              ddp_find_unused_parameters=False)
    trainer = Trainer(model=model, args=targs, train_dataset=table, callbacks=[Clock()],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    return {"points": points}


def run_worker(name: str, data: Path, args) -> dict:
    """One configuration in a child process; returns its measurements and peak RSS."""
    with tempfile.TemporaryDirectory(prefix=f"tune-bench-{name}-") as work:
        result_file = Path(work) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.tuning.run", "--worker", name, "--data", str(data),
               "--work", work, "--result", str(result_file), "--steps", str(args.steps),
               "--max-length", str(args.max_length), "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {stderr[-3000:]}")
        points = json.loads(result_file.read_text())["points"]
    tps, tokens, seconds = _throughput(points, args.warmup)
    return {"tokens_per_second": round(tps, 1), "tokens": tokens, "seconds": round(seconds, 2),
            "steps_measured": len(points) - args.warmup, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "wall_seconds": round(time.monotonic() - started, 1)}


def _summarise(runs: list[dict]) -> dict:
    """Median tokens/s and the highest peak RSS over the rounds (each round's figures are kept too)."""
    import statistics

    return {"tokens_per_second": round(statistics.median(r["tokens_per_second"] for r in runs), 1),
            "tokens": runs[0]["tokens"], "steps_measured": runs[0]["steps_measured"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "rounds": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the tokens/s figure")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="rounds over all configurations (median is reported)")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run only these configurations")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # child process: one configuration
        import torch

        torch.set_num_threads(args.threads)
        spec = CONFIGS[args.worker]
        work = Path(args.work)
        result = (worker_baseline(Path(args.data), work, args) if spec["kind"] == "baseline"
                  else worker_ours(spec, Path(args.data), work, args))
        Path(args.result).write_text(json.dumps(result))
        return 0

    from runtime.models import ensure_model

    ensure_model("smollm2")  # build once, outside the measured runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tune-bench-data-") as tmp:
        data = make_data(Path(tmp) / "chats.jsonl")
        runs: dict[str, list[dict]] = {}
        for round_ in range(args.repeat):  # round-robin, so load from other users hits every config alike
            for name in args.only or CONFIGS:
                print(f"round {round_ + 1}/{args.repeat}: {name} ...", flush=True)
                runs.setdefault(name, []).append(run_worker(name, data, args))
    results = {name: _summarise(rs) for name, rs in runs.items()}
    base = results.get("baseline-qlora")
    for r in results.values():
        if base:
            r["speedup_vs_baseline"] = round(r["tokens_per_second"] / base["tokens_per_second"], 2)
            r["rss_vs_baseline"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 2)
    header = f"{'config':<20}{'tokens/s':>10}{'x base':>8}{'peak RSS MiB':>14}{'x base':>8}{'tokens':>8}{'steps':>7}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<20}{r['tokens_per_second']:>10.1f}{r.get('speedup_vs_baseline', 0):>8.2f}"
              f"{r['peak_rss_mib']:>14.1f}{r.get('rss_vs_baseline', 0):>8.2f}{r['tokens']:>8}{r['steps_measured']:>7}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"tuning-{stamp}.json"
    out.write_text(json.dumps({
        "benchmark": "tuning", "preset": PRESET, "device": "cpu", "torch_threads": args.threads,
        "steps": args.steps, "warmup_steps": args.warmup, "max_length": args.max_length, "rounds": args.repeat,
        "note": "shared 2-core machine: timings swing 1.5-2x between runs",
        "targets": {"ours-qlora": ">= 1.0x baseline tokens/s", "ours-qlora-packed": ">= 1.5x baseline tokens/s",
                    "memory": "peak RSS <= baseline"},
        "results": results,
    }, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

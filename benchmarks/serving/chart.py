"""The chart beside the JSON: output tokens/s and TTFT p50 against concurrency, one line per server (medians, with
min-max bars), and the in-process limit."""

from __future__ import annotations

from pathlib import Path


def draw(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    fig, (rate, ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, by_level in report["servers"].items():
        rows = [by_level[str(c)] for c in levels]
        for axis, key in ((rate, "output_tok_s"), (ttft, "ttft_p50_s")):
            medians = [r[key]["median"] for r in rows]
            spread = [[m - r[key]["min"] for m, r in zip(medians, rows, strict=True)],
                      [r[key]["max"] - m for m, r in zip(medians, rows, strict=True)]]
            axis.errorbar(levels, medians, yerr=spread, marker="o", capsize=3, label=name)
    limit = report.get("limit") or {}
    if limit:
        rate.plot(levels, [limit[str(c)]["output_tok_s"] for c in levels], "k--", label="in-process limit")
    rate.set(title="output tokens/s (higher is better)", xlabel="concurrency", xscale="log", xticks=levels)
    ttft.set(title="TTFT p50, s (lower is better)", xlabel="concurrency", xscale="log", xticks=levels)
    for axis in (rate, ttft):
        axis.minorticks_off()
        axis.set_xticklabels([str(c) for c in levels])
        axis.grid(alpha=0.3)
    rate.legend(fontsize=8)
    env = report["environment"]
    fig.suptitle(f"{report['model']}, {report['max_tokens']} tokens forced, {env['torch_threads']} thread(s), "
                 f"{report['rounds']} rounds; {env['cpu_model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

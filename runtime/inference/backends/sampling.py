"""Per-request sampling for transformers' continuous batching: temperature, top-k, top-p and seed; and a minimum
of new tokens before the end of sequence (min_tokens, ignore_eos).

Why our own processor: CB's per-request warpers (transformers 5.24) fully sort the vocabulary twice per row and
step (top-k and top-p) even when a request asks for neither, and draw every row with one `torch.multinomial` on the
global RNG, so a request's `seed` would depend on its batch neighbours. Measured on SmolLM2 (49k vocab), 16 rows
on one CPU thread: the sorts alone cost ~80 ms per step each, more than the model's forward pass.

So the manager runs with do_sample=False (CB takes the argmax) and this processor, the only one, rewrites the rows
of sampled requests: it draws the token itself (with the request's own generator when it has a seed) and leaves
only that token possible, so CB's argmax returns it. Greedy rows are untouched and cost nothing.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import torch
from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessor

SLOT_KWARG = "sampling_slot"
MIN_NEW_TOKENS_KWARG = "min_new_tokens"


@dataclass
class _RowParams:
    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None


class RequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._params: dict[int, _RowParams] = {}
        self._slots = itertools.count()

    def register(self, temperature: float, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> int:
        """Parameters of one sampled request; pass the returned slot to add_request as `sampling_slot=`."""
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        slot = next(self._slots) % (2**31 - 1)
        with self._lock:
            self._params[slot] = _RowParams(float(temperature), int(top_k), float(top_p), generator)
        return slot

    def forget(self, slot: int) -> None:
        with self._lock:
            self._params.pop(slot, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(-1)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        slots = [r.state.logit_processor_kwargs.get(SLOT_KWARG, -1) for r in requests_with_new_token]
        return torch.tensor(slots, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        slots = tensor_arg[: scores.size(0)].tolist()
        with self._lock:
            rows = [(i, self._params.get(s)) for i, s in enumerate(slots) if s >= 0]
        rows = [(i, p) for i, p in rows if p is not None]
        if not rows:
            return scores
        for i, p in rows:
            token = self._draw(scores[i], p)
            scores[i].fill_(float("-inf"))
            scores[i, token] = 0.0
        return scores

    @staticmethod
    def _draw(logits: torch.Tensor, p: _RowParams) -> int:
        logits = logits.float().cpu() / max(p.temperature, 1e-5)
        candidates = None
        if 0 < p.top_k < logits.numel():
            logits, candidates = torch.topk(logits, p.top_k)
        if p.top_p < 1.0:
            order = torch.argsort(logits, descending=True)
            cumulative = torch.softmax(logits[order], dim=-1).cumsum(-1)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = int(torch.searchsorted(cumulative, torch.tensor(p.top_p)).item()) + 1
            mask = torch.full_like(logits, float("-inf"))
            mask[order[:keep]] = 0.0
            logits = logits + mask
        choice = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=p.generator).item())
        return int(candidates[choice]) if candidates is not None else choice


class MinNewTokens(ContinuousBatchingLogitsProcessor):
    """No end of sequence before a request's `min_new_tokens` (vLLM's `min_tokens`; `ignore_eos` is min = max): its
    EOS logits are -inf until it has generated that many tokens. CB then never sees EOS, so it runs on; the
    RequestSampler, after this one, draws from what is left."""

    supported_kwargs: dict[str, type] = {MIN_NEW_TOKENS_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self, eos_ids: set[int]) -> None:
        self.eos_ids = torch.tensor(sorted(eos_ids), dtype=torch.long)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        # tokens still due before EOS may come: the request's minimum less what it has generated
        due = [r.state.logit_processor_kwargs.get(MIN_NEW_TOKENS_KWARG, 0) - len(r.state.generated_tokens)
               for r in requests_with_new_token]
        return torch.tensor(due, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        rows = (tensor_arg[: scores.size(0)] > 0).nonzero().flatten()
        if rows.numel() and self.eos_ids.numel():
            eos = self.eos_ids.to(scores.device)
            scores[rows.to(scores.device).unsqueeze(1), eos.unsqueeze(0)] = float("-inf")
        return scores


def install(manager, eos_ids: set[int]) -> RequestSampler:
    """Make a not-yet-started ContinuousBatchingManager hold back EOS (MinNewTokens), then sample through a
    RequestSampler; returns the sampler."""
    sampler = RequestSampler()
    processors = manager.logit_processor
    for processor in (MinNewTokens(eos_ids), sampler):  # in this order: the sampler draws from the masked row
        processors.logits_processor.append(processor)
        processors.tensors_required += 1
        processors.supported_keys.update(processor.supported_kwargs)
    processors.do_processing = True
    return sampler

"""Per-request `seed` for transformers' continuous batching.

CB samples every request of a batch with one `torch.multinomial` on the global RNG, so a request's `seed` would
depend on what else is in the batch. This processor runs last in CB's per-request logits-processor list: for each
seeded request it samples the next token itself from the already-warped scores with the request's own
`torch.Generator`, and leaves only that token possible; CB's multinomial then has exactly one choice. Unseeded
requests pass through untouched.
"""

from __future__ import annotations

import threading

import torch
from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessor


class SeededSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {"seed": int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, int] = {}  # request id -> slot in _generators
        self._generators: dict[int, torch.Generator] = {}
        self._next_slot = 0

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(-1)

    def _slot(self, request_id: str, seed: int) -> int:
        with self._lock:
            slot = self._slots.get(request_id)
            if slot is None:
                slot = self._next_slot = (self._next_slot + 1) % (2**31 - 1)
                self._slots[request_id] = slot
                self._generators[slot] = torch.Generator(device="cpu").manual_seed(seed)
            return slot

    def forget(self, request_id: str) -> None:
        """Drop a finished request's generator."""
        with self._lock:
            slot = self._slots.pop(request_id, None)
            if slot is not None:
                self._generators.pop(slot, None)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        slots = []
        for request in requests_with_new_token:
            seed = request.state.logit_processor_kwargs.get("seed")
            slots.append(-1 if seed is None else self._slot(request.state.request_id, seed))
        return torch.tensor(slots, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        slots = tensor_arg[: scores.size(0)].tolist()
        if all(s < 0 for s in slots):
            return scores
        scores = scores.clone()
        for row, slot in enumerate(slots):
            generator = self._generators.get(slot) if slot >= 0 else None
            if generator is None:
                continue
            probs = torch.softmax(scores[row].float(), dim=-1).cpu()
            token = int(torch.multinomial(probs, 1, generator=generator))
            chosen = scores[row, token].clone()
            scores[row].fill_(float("-inf"))
            scores[row, token] = chosen
        return scores


def install(manager) -> SeededSampler:
    """Append the sampler to a not-yet-started ContinuousBatchingManager's logits processors."""
    sampler = SeededSampler()
    processors = manager.logit_processor
    processors.logits_processor.append(sampler)
    processors.tensors_required += 1
    processors.supported_keys.update(sampler.supported_kwargs)
    processors.do_processing = True
    return sampler

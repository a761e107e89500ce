"""The per-request sampler (runtime/inference/backends/sampling.py) on real tensors: greedy rows untouched,
seeds reproducible, top-k and top-p respected; EOS held back until a request's min_new_tokens."""

from types import SimpleNamespace

import pytest
import torch

from runtime.inference.backends.sampling import MIN_NEW_TOKENS_KWARG, MinNewTokens, RequestSampler

pytestmark = pytest.mark.slow  # imports transformers (~5 s); the logic itself takes milliseconds


def draw(sampler, scores, slots):
    out = sampler(scores.clone(), torch.tensor(slots, dtype=torch.int32))
    return out.argmax(-1).tolist(), out


def test_greedy_rows_untouched_sampled_rows_one_hot():
    sampler = RequestSampler()
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    slot = sampler.register(temperature=1.0, seed=1)
    tokens, out = draw(sampler, scores, [-1, slot, -1])
    assert torch.equal(out[0], scores[0]) and torch.equal(out[2], scores[2])
    assert torch.isfinite(out[1]).sum() == 1 and tokens[1] == int(torch.isfinite(out[1]).nonzero())


def test_seed_reproducible_and_different_seeds_differ():
    scores = torch.zeros(1, 1000)  # uniform: any token possible

    def run(seed):
        sampler = RequestSampler()
        slot = sampler.register(temperature=1.0, seed=seed)
        return [draw(sampler, scores, [slot])[0][0] for _ in range(5)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_top_k_and_top_p_limit_the_choice():
    scores = torch.arange(100, dtype=torch.float32).unsqueeze(0)  # token 99 most likely
    sampler = RequestSampler()
    k = sampler.register(temperature=5.0, top_k=3, seed=0)
    assert all(draw(sampler, scores, [k])[0][0] in (97, 98, 99) for _ in range(30))
    p = sampler.register(temperature=1.0, top_p=0.5, seed=0)
    assert all(draw(sampler, scores, [p])[0][0] == 99 for _ in range(10))  # 99 alone holds > 50% of the mass
    sampler.forget(k)
    assert torch.equal(draw(sampler, scores, [k])[1], scores)  # forgotten slot: untouched


def test_eos_is_held_back_until_min_new_tokens():
    eos = {3, 7}
    mask = MinNewTokens(eos)

    def request(minimum, generated):
        kwargs = {MIN_NEW_TOKENS_KWARG: minimum} if minimum is not None else {}
        return SimpleNamespace(state=SimpleNamespace(logit_processor_kwargs=kwargs, generated_tokens=[0] * generated))

    # due: 5 - 2 = 3 (held back), 5 - 5 = 0 (free), no minimum (free), 1 - 0 = 1 (held back)
    due = mask.prepare_tensor_args([request(5, 2), request(5, 5), request(None, 9), request(1, 0)])
    assert due.tolist() == [3, 0, -9, 1]
    scores = torch.zeros(4, 10)
    scores[:, 3] = 5.0  # EOS is every row's best token
    out = mask(scores.clone(), due)
    assert out.argmax(-1).tolist() != [3, 3, 3, 3] and out[1].argmax() == 3 and out[2].argmax() == 3
    for row in (0, 3):
        assert out[row, 3] == float("-inf") and out[row, 7] == float("-inf")
        assert torch.isfinite(out[row]).sum() == 8

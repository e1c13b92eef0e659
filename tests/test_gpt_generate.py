"""Generation: the KV cache gives the same tokens and logits as re-running the whole window
every step (also once the context slides past block_size), and the sampler's top_k /
temperature / seed.  Logits are compared with NaN never equal to NaN, and must be finite: a
mask that hides a position from itself makes every logit NaN in both paths alike."""
import numpy as np
import pytest

from gpt.model import GPT, GPTConfig
from gpt.sampling import sample_next
from gpt_options import OPTION_IDS, OPTIONS
from minigrad import Tensor, no_grad

V, BLOCK = 17, 8


def tiny(**options) -> GPT:
    # a seed whose greedy continuations do not repeat one token (see the "degenerate" check)
    Tensor.manual_seed(1 if options.get("position_embedding") == "sinusoidal" else 3)
    model = GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, **options))
    # larger weights than GPT-2's init, so greedy decoding does not settle on one token at once
    state = {k: v * 20 if v.ndim == 2 else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def generate_without_cache(model, ids, n):
    """The reference: run the last block_size tokens through forward() for every new token."""
    ids = np.array(ids)
    with no_grad():
        for _ in range(n):
            logits, _ = model(Tensor(ids[:, -BLOCK:]))
            logits = logits.numpy()
            assert np.isfinite(logits).all(), "forward() gave non-finite logits"
            ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return ids


def count_cached_steps(model):
    """Wrap the captured one-position step to count the decoding steps that used the cache."""
    calls = []
    steps = model._sampling_steps

    def counting():
        full_window, one_position = steps()

        def counted(*args):
            calls.append(True)
            return one_position(*args)
        return full_window, counted
    model._sampling_steps = counting
    return calls


def assert_same_logits(actual, desired, what):
    assert np.isfinite(desired).all(), f"{what}: the reference logits are not finite"
    np.testing.assert_allclose(actual, desired, atol=1e-5, equal_nan=False, err_msg=what)


# prompt shorter than the window: the cache serves every step until it is full (BLOCK - len steps),
# then the window slides; a prompt longer than the window refills at every step (no cached step)
@pytest.mark.parametrize("prompt_len", [1, 3, BLOCK + 2])
@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_kv_cache_matches_full_recomputation_greedy(prompt_len, options):
    model = tiny(**options)
    prompt = np.random.default_rng(prompt_len).integers(0, V, size=(2, prompt_len))
    n = 2 * BLOCK + 3                                  # runs well past block_size: the window slides
    cached_steps = count_cached_steps(model)
    cached = model.generate(prompt, n, top_k=1)
    assert sum(cached_steps) == max(BLOCK - prompt_len, 0), f"cached steps: {cached_steps}"
    reference = generate_without_cache(model, prompt, n)
    assert cached.shape == (2, prompt_len + n)
    assert min(len(set(row[prompt_len:].tolist())) for row in reference) > 2, "degenerate reference"
    np.testing.assert_array_equal(cached, reference)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("prefix", [1, 3])
def test_cached_logits_equal_forward_logits(options, prefix):
    """The cache's one-position steps give the logits forward() gives at that position."""
    model = tiny(**options)
    ids = np.random.default_rng(prefix).integers(0, V, size=(2, BLOCK))
    full, _ = model(Tensor(ids))
    with no_grad():
        logits, cache = model._step(ids[:, :prefix], 0, None)
        steps = [logits]
        for t in range(prefix, BLOCK):
            logits, cache = model._step(ids[:, t:t + 1], t, cache)
            steps.append(logits)
    assert_same_logits(np.stack(steps, 1), full.numpy()[:, prefix - 1:], "cached steps vs forward()")
    D, H = model.config.n_embd, model.config.n_head
    assert all(k.shape == v.shape == (2, H, BLOCK, D // H) for k, v in cache), \
        "the static cache holds block_size positions at every step"
    with pytest.raises(ValueError, match="a cached step takes one position, got 2"):
        model._step(ids[:, :2], 1, cache)


def test_first_position_logits_are_finite_and_match():
    """Position 0 attends to itself only: with the diagonal masked its softmax is 0/0."""
    model = tiny()
    ids = np.random.default_rng(5).integers(0, V, size=(3, 1))
    full, _ = model(Tensor(ids))
    logits, _ = model._step(ids, 0, None)
    assert_same_logits(logits, full.numpy()[:, 0], "one-token prompt: _step vs forward()")


def test_a_one_dimensional_prompt_is_one_sequence():
    model = tiny()
    flat = model.generate(np.array([1, 2, 3]), 4, top_k=1)
    np.testing.assert_array_equal(flat, model.generate(np.array([[1, 2, 3]]), 4, top_k=1))
    assert flat.shape == (1, 7)


def test_generate_leaves_training_mode_as_it_was():
    model = tiny()
    model.generate(np.zeros((1, 1), dtype=np.int64), 2, top_k=1)
    assert model.training
    model.eval()
    model.generate(np.zeros((1, 1), dtype=np.int64), 2, top_k=1)
    assert not model.training


def test_sampling_is_reproducible_with_a_seed():
    model = tiny()
    prompt = np.zeros((1, 2), dtype=np.int64)
    a = model.generate(prompt, 10, temperature=1.5, seed=5)
    b = model.generate(prompt, 10, temperature=1.5, seed=5)
    np.testing.assert_array_equal(a, b)


def test_top_k_samples_only_among_the_k_largest():
    logits = np.array([[0.0, 3.0, 1.0, 2.9, -1.0]])
    rng = np.random.default_rng(0)
    picks = {int(sample_next(logits, 1.0, 2, rng)[0]) for _ in range(200)}
    assert picks == {1, 3}


def test_greedy_and_temperature_zero_take_the_argmax():
    logits = np.array([[0.0, 3.0, 1.0], [5.0, 1.0, 2.0]])
    np.testing.assert_array_equal(sample_next(logits, 1.0, 1), [1, 0])
    np.testing.assert_array_equal(sample_next(logits, 0.0, None), [1, 0])


def test_sampling_follows_the_softmax():
    logits = np.log(np.array([[0.2, 0.5, 0.3]]))
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_next(logits, 1.0, None, rng)[0] for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(counts / 4000, [0.2, 0.5, 0.3], atol=0.03)


def test_generate_rejects_out_of_range_prompts():
    with pytest.raises(IndexError, match=f"index {V} is out of range for a table of {V} rows"):
        tiny().generate(np.array([[V]]), 1)

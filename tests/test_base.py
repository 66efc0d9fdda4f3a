"""Unit tests of the protocol types, the edit helpers, the memo and the facade."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pytest_interp.backends.base import Edit, ModelInfo, Run, Site, Tokens, apply_edits
from pytest_interp.errors import InterpError, SiteError
from pytest_interp.memo import ActivationCache, RunMemo
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest, parse_bool, parse_bytes
from pytest_interp.sites import all_sites

INFO = ModelInfo("m", "r", "LlamaForCausalLM", 4, 2, 8, 10, 16, "float32", "cpu", "x")


def test_site_rejects_unknown_component():
    with pytest.raises(SiteError, match=r"^unknown site component 'resid': use one of resid_pre"):
        Site(0, "resid")  # type: ignore[arg-type]


def test_layer_range_error_names_the_range():
    assert INFO.check_layer(-1) == 3
    with pytest.raises(SiteError) as info:
        INFO.check_layer(4)
    assert str(info.value) == (
        "layer 4 is out of range for m with 4 layers: use 0..3 (or -4..-1 from the end)"
    )


def test_tokens_must_share_a_length():
    with pytest.raises(InterpError) as info:
        Tokens(((1, 2), (3,)), (("a", "b"), ("c",)))
    assert str(info.value) == (
        "batch rows have different lengths [1, 2]: batch only prompts that tokenize to the "
        "same number of tokens"
    )


def test_edit_validation_messages():
    with pytest.raises(SiteError, match=r"^attn_pattern is read-only"):
        Edit(Site(0, "attn_pattern"), torch.zeros(1))
    with pytest.raises(SiteError, match=r"^a head_out edit needs head=H \(which head to edit\)$"):
        Edit(Site(0, "head_out"), torch.zeros(8))
    with pytest.raises(InterpError, match=r"^edit mode 'swap' is not 'replace' or 'add'$"):
        Edit(Site(0, "resid_pre"), torch.zeros(8), mode="swap")  # type: ignore[arg-type]


def test_apply_edits_replace_and_add_touch_only_their_slice():
    x = torch.zeros(2, 3, 4)
    out = apply_edits(x, [
        Edit(Site(0, "resid_pre"), torch.ones(4), positions=(-1,), rows=(1,)),
        Edit(Site(0, "resid_pre"), torch.full((4,), 2.0), mode="add", positions=(0,)),
    ])
    assert x.abs().sum() == 0  # input untouched
    assert out[1, 2].tolist() == [1.0] * 4 and out[0, 2].tolist() == [0.0] * 4
    assert out[:, 0].tolist() == [[2.0] * 4] * 2 and out[:, 1].abs().sum() == 0


def test_apply_edits_shape_mismatch_is_one_line():
    with pytest.raises(InterpError) as info:
        apply_edits(torch.zeros(1, 3, 4), [Edit(Site(2, "mlp_out"), torch.ones(5))])
    assert str(info.value) == (
        "edit value of shape (5,) does not fit mlp_out@2: it must broadcast to "
        "[rows, positions, d_model] = [1, 3, 4]"
    )


def test_edit_key_is_content_based():
    a = Edit(Site(1, "resid_pre"), torch.ones(4), positions=[1])
    b = Edit(Site(1, "resid_pre"), torch.ones(4), positions=(1,))
    c = Edit(Site(1, "resid_pre"), torch.ones(4) * 2, positions=(1,))
    assert a.key == b.key != c.key


def _run(n: int, fill: float = 0.0) -> Run:
    tokens = Tokens(((1,) * n,), (("a",) * n,))
    return Run(tokens, torch.full((1, n, 10), fill), {Site(0, "resid_pre"): torch.zeros(1, n, 8)})


def test_memo_evicts_least_recent_and_never_exceeds_budget():
    one = _run(4).nbytes()
    memo = RunMemo(max_bytes=int(one * 2.5))
    for i in range(5):
        memo.put(("k", i), _run(4))
        assert memo.nbytes <= memo.max_bytes
    assert len(memo) == 2 and memo.stats.evictions == 3
    assert memo.get(("k", 4), {Site(0, "resid_pre")}) is not None
    assert memo.get(("k", 0), ()) is None


def test_memo_keeps_nothing_larger_than_its_budget():
    memo = RunMemo(max_bytes=10)
    memo.put(("k",), _run(4))
    assert len(memo) == 0 and memo.nbytes == 0


def test_results_share_the_budget_with_runs_and_are_computed_once_while_kept():
    @dataclass
    class Held:
        probs: np.ndarray
        rows: list[torch.Tensor]

    def held() -> Held:
        made.append(1)
        return Held(np.zeros(1000, np.float32), [torch.zeros(500)])  # 6,000 bytes + 1 KiB

    made: list[int] = []
    memo = RunMemo(max_bytes=_run(4).nbytes() + 2 * 7024)
    memo.put(("run",), _run(4))
    first = memo.result("a", held)
    assert memo.result("a", held) is first and made == [1] and memo.stats.results == 1
    memo.result("b", held)
    assert memo.nbytes == memo.max_bytes and memo.stats.evictions == 0
    memo.result("c", held)  # over: the least recent go, runs first, until it fits
    assert len(memo) == 0 and memo.stats.evictions == 2 and memo.nbytes == 2 * 7024
    assert memo.result("b", held) is not first and made == [1, 1, 1]
    memo.result("a", held)  # evicted: computed again
    assert made == [1, 1, 1, 1] and memo.nbytes == 2 * 7024


def test_activation_cache_is_read_only_copies():
    run = _run(3)
    cache = ActivationCache(run, INFO)
    tensor = cache["resid_pre", 0]
    tensor += 1
    assert run.acts[Site(0, "resid_pre")].abs().sum() == 0
    assert cache[Site(0, "resid_pre")].shape == (1, 3, 8)
    with pytest.raises(TypeError):
        cache[Site(0, "resid_pre")] = tensor  # type: ignore[index]
    with pytest.raises(KeyError, match="mlp_out@1 was not recorded"):
        cache["mlp_out", 1]


def test_settings_parsers():
    assert parse_bytes("2GiB") == 2 * 1024**3 and parse_bytes("512 MB") == 512 * 1024**2
    with pytest.raises(InterpError, match=r"^interp_memory 'lots' is not a size"):
        parse_bytes("lots")
    assert parse_bool("auto", "x") is None and parse_bool("TRUE", "x") is True
    with pytest.raises(InterpError, match=r"^--bos 'maybe' is not a boolean"):
        parse_bool("maybe", "--bos")
    with pytest.raises(InterpError, match=r"^no model given: pass --interp-model SPEC"):
        ModelRequest("")
    with pytest.raises(InterpError, match=r"^interp backend 'jax' is not one of"):
        ModelRequest("x", backend="jax")  # type: ignore[arg-type]


class CountingBackend:
    """Wraps a backend and counts forward passes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.info = inner.info

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, tokens, *, read=(), edits=(), **options):
        self.calls += 1
        return self.inner.run(tokens, read=read, edits=edits, **options)


def test_facade_memoises_runs_and_widens_reads(load_backend):
    backend = CountingBackend(load_backend("tiny-random-llama"))
    model = InterpModel(backend)
    prompt = "The capital of France is"
    first = model.run(prompt, read=[Site(0, "resid_pre")])
    assert model.run(prompt, read=[Site(0, "resid_pre")]) is first and backend.calls == 1
    wider = model.run(prompt, read=[Site(1, "mlp_out")])
    assert backend.calls == 2 and {Site(0, "resid_pre"), Site(1, "mlp_out")} <= set(wider.acts)
    model.run(prompt, read=[Site(0, "resid_pre")])
    assert backend.calls == 2
    # The second pass read mlp_out at every layer (a sweep over layers asks for each in turn).
    assert set(all_sites(model.info.n_layers, ("mlp_out",))) <= set(wider.acts)
    model.run(prompt, read=[Site(0, "mlp_out")])
    assert backend.calls == 2
    edit = Edit(Site(0, "resid_pre"), torch.zeros(64), positions=(0,))
    model.run(prompt, edits=[edit])
    model.run(prompt, edits=[Edit(Site(0, "resid_pre"), torch.zeros(64), positions=(0,))])
    assert backend.calls == 3
    assert model.memo.stats.hits == 4  # the 2nd, 4th and 5th runs, and the repeated edit


def test_facade_cache_and_generate(load_backend):
    model = InterpModel(load_backend("smollm2-135m", "nnsight"))
    cache = model.cache("The capital of France is")
    assert len(cache) == 30 * 8  # every component of every layer, mlp_in included
    assert cache["resid_post", -1].shape == (1, 5, 576)
    assert cache["head_out", 3].shape == (1, 5, 9, 576)
    assert cache["attn_pattern", 0].shape == (1, 9, 5, 5)
    assert cache.str_tokens == ("The", " capital", " of", " France", " is")
    assert model.generate("The capital of France is", max_new_tokens=2).startswith(" Paris")


def test_prompt_longer_than_context_is_one_line(load_backend):
    model = InterpModel(load_backend("tiny-random-gpt2"))
    with pytest.raises(InterpError) as info:
        model.run(" a" * 600)
    assert str(info.value) == (
        "the prompt has 600 tokens but tiny-random-gpt2 takes at most 512: shorten the prompt"
    )


def test_prepend_bos_policy_is_shared_by_both_backends(load_backend):
    for bos in (None, True, False):
        tl = load_backend("tiny-random-llama", "transformer_lens", prepend_bos=bos)
        nn = load_backend("tiny-random-llama", "nnsight", prepend_bos=bos)
        tokens = tl.tokenize("Hello world")
        assert tokens == nn.tokenize("Hello world")
        assert (tokens.ids[0][0] == 1) is bool(bos)  # SmolLM2's tokenizer adds no BOS itself

"""The ``interp_model`` facade: one loaded model, a memoised run cache, probes as methods."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from .errors import InterpError, ModelSpecError
from .record import record, remember_origin
from .settings import DEFAULT_MEMO_BYTES, IDENTITY_PROMPT, PLACEHOLDER, ModelRequest

if TYPE_CHECKING:
    from torch import Tensor

    from .backends.base import Backend, Edit, ModelInfo, Run, Start, Tokens
    from .dataset_expectation import DatasetResult
    from .lenses import Lens, TunedLens
    from .metrics import Metric
    from .probes.ablation import AblationSweep, Case
    from .results import (
        AblationResult,
        AttentionResult,
        GenerationResult,
        LensResult,
        PatchingResult,
        PatchscopeResult,
        SteeringResult,
        TokenSpec,
        Vocab,
    )
    from .sites import Component, Part, Site

T = TypeVar("T")



@dataclass
class MemoStats:
    """A model's work: its run memo's ``hits``, ``misses`` and ``evictions``; the forward
    ``passes`` computed (memoised or not, each generation step one); the probe ``results``
    served again by ``InterpModel.remember``."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    passes: int = 0
    results: int = 0

    @property
    def reused(self) -> int:
        """Runs and probe results taken from the memo instead of computed again."""
        return self.hits + self.results


@dataclass
class RunMemo:
    """LRU memo of runs keyed by (token ids, edits), bounded by the bytes it holds."""

    max_bytes: int = DEFAULT_MEMO_BYTES
    stats: MemoStats = field(default_factory=MemoStats)
    _runs: OrderedDict[tuple[Any, ...], Run] = field(default_factory=OrderedDict)
    _bytes: int = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, key: tuple[Any, ...], read: Collection[Site]) -> Run | None:
        run = self._runs.get(key)
        if run is None or not all(site in run.acts for site in read):
            return None
        self._runs.move_to_end(key)
        self.stats.hits += 1
        return run

    def sites(self, key: tuple[Any, ...]) -> set[Site]:
        run = self._runs.get(key)
        return set(run.acts) if run is not None else set()

    def put(self, key: tuple[Any, ...], run: Run) -> None:
        self.stats.misses += 1
        if key in self._runs:
            self._bytes -= self._runs.pop(key).nbytes()
        size = run.nbytes()
        if size > self.max_bytes:
            return  # larger than the whole budget: returned to the caller, never kept
        self._runs[key] = run
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._runs.popitem(last=False)
            self._bytes -= old.nbytes()
            self.stats.evictions += 1

    def clear(self) -> None:
        self._runs.clear()
        self._bytes = 0


class ActivationCache(Mapping["Site", "Tensor"]):
    """Read-only view of one memoised run: ``cache["resid_pre", 3]`` or ``cache[Site(3, ...)]``.

    Tensors keep the batch dimension (TransformerLens's convention) and are copies, so
    changing one never changes the memo.
    """

    def __init__(self, run: Run, info: ModelInfo) -> None:
        self._run = run
        self._info = info

    def _site(self, key: object) -> Site:
        from .sites import Site

        if isinstance(key, Site):
            return key
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
            return Site(self._info.check_layer(key[1]), key[0])  # type: ignore[arg-type]
        raise KeyError(f"use cache[component, layer] or cache[Site(layer, component)], not {key!r}")

    def __getitem__(self, key: object) -> Tensor:
        site = self._site(key)
        if site not in self._run.acts:
            raise KeyError(f"{site} was not recorded for this prompt")
        return self._run.acts[site].clone()

    def __iter__(self) -> Iterator[Site]:
        return iter(sorted(self._run.acts))

    def __len__(self) -> int:
        return len(self._run.acts)

    @property
    def logits(self) -> Tensor:
        """[1, P, V]"""
        return self._run.logits.clone()

    @property
    def tokens(self) -> Tokens:
        return self._run.tokens

    @property
    def str_tokens(self) -> tuple[str, ...]:
        return self._run.tokens.strs[0]


class InterpModel:
    """A loaded model as tests see it: tokenize, memoised runs, activations, generation, and
    the probes as methods (each result memoised per argument set and recorded for the report).

    It is the ``Runner`` that probes are written against (``pytest_interp.probes.runner``).
    """

    def __init__(
        self, backend: Backend, *, request: ModelRequest | None = None,
        memory_bytes: int = DEFAULT_MEMO_BYTES,
    ) -> None:
        self.backend = backend
        self.request = request
        self.memo = RunMemo(memory_bytes)
        self._vocab: Vocab | None = None
        self._tuned_lenses: dict[str, TunedLens] = {}
        self._results: dict[tuple[Any, ...], Any] = {}
        self._provenance: dict[str, str] | None = None
        self._info: ModelInfo | None = None  # set by close()

    def __repr__(self) -> str:
        i = self.info
        return (f"<InterpModel {i.name} ({i.architecture}, {i.n_layers} layers) via {i.backend} "
                f"on {i.device}/{i.dtype}>")

    def remember(self, key: tuple[Any, ...] | None, compute: Callable[[InterpModel], T]) -> T:
        """``compute(self)``'s result, computed once per ``key`` for this model (None: not
        memoised), recorded for the running test's report, and remembered as the recipe of
        that result: a snapshot re-runs ``compute`` on variants of the model to measure its
        noise floor. Probes with the same arguments are never run twice."""
        if key is None:
            result = compute(self)
        else:
            if key in self._results:
                self.memo.stats.results += 1
            else:
                self._results[key] = compute(self)
            result = self._results[key]
        remember_origin(result, self, compute)
        return record(result)

    def forget(self) -> None:
        """Drop every memoised run and result (benchmarks time work, not the memo)."""
        self.memo.clear()
        self._results.clear()

    def close(self) -> None:
        """Free the weights, runs and results; ``info`` and the memo's counts stay (the
        session summary names released models too). Any other use after this fails."""
        self._info = self.backend.info
        self.forget()
        self._tuned_lenses.clear()
        del self.backend

    @property
    def provenance(self) -> dict[str, str]:
        """What this model's results come from: weights and tokenizer fingerprints, backend,
        and the numeric libraries (kept on each snapshot's metadata line)."""
        if self._provenance is None:
            import hashlib
            from importlib import metadata

            vocab = sorted(self.backend.vocabulary().items())
            digest = hashlib.sha256(repr((vocab, sorted(self.vocab.special))).encode())
            self._provenance = {
                "weights": self.info.revision, "tokenizer": digest.hexdigest()[:16],
                "backend": self.info.backend, "torch": metadata.version("torch"),
                "transformers": metadata.version("transformers"),
            }
        return self._provenance

    # -- the Runner interface -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the pool released this model (``close``)."""
        return self._info is not None

    @property
    def info(self) -> ModelInfo:
        return self._info if self._info is not None else self.backend.info

    @property
    def vocab(self) -> Vocab:
        """Token id <-> string, shared by every result of this model."""
        if self._vocab is None:
            from functools import lru_cache

            from .results import Vocab

            decode = self.backend.decode
            self._vocab = Vocab(
                self.info.d_vocab, lru_cache(maxsize=None)(lambda i: decode([i])),
                self.backend.encode, decode, self.backend.special_ids,
            )
        return self._vocab

    def tokens(self, prompts: str | Sequence[str] | Tokens) -> Tokens:
        """Tokenize one prompt or a batch of prompts of equal token length."""
        from .backends.base import Tokens

        if isinstance(prompts, Tokens):
            return prompts
        if isinstance(prompts, str):
            return self.backend.tokenize(prompts)
        if not isinstance(prompts, Sequence) or not prompts:
            raise InterpError(f"expected a prompt or a list of prompts, got {prompts!r}")
        return Tokens.stack([self.backend.tokenize(p) for p in prompts])

    def run(
        self, prompts: str | Sequence[str] | Tokens, *, read: Collection[Site] = (),
        edits: Sequence[Edit] = (),
    ) -> Run:
        """One batched forward pass, memoised per (tokens, edits); never repeated."""
        from .backends.base import edits_key

        tokens = self.tokens(prompts)
        key = (tokens.ids, edits_key(edits))
        read = set(read)
        hit = self.memo.get(key, read)
        if hit is not None:
            return hit
        run = self.backend.run(tokens, read=read | self.memo.sites(key), edits=edits)
        self.memo.stats.passes += 1
        self.memo.put(key, run)
        return run

    def forward(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        """One batched forward pass, not memoised (for rows used once, e.g. sweep rows);
        ``grad`` runs it with autograd (see ``Backend.run``)."""
        self.memo.stats.passes += 1
        return self.backend.run(tokens, read=read, edits=edits, start=start,
                                logits_to_keep=logits_to_keep, past=past, keep_past=keep_past,
                                grad=grad)

    def unembed(self, hidden: Tensor) -> Tensor:
        """Final norm + unembedding of residual-stream vectors [..., D] -> [..., V]."""
        return self.backend.unembed(hidden)

    def generate_tokens(
        self, prompts: str | Sequence[str] | Tokens, *, max_new_tokens: int = 20,
        edits: Sequence[Edit] = (), on_step: Callable[[int, Tensor], None] | None = None,
        choose: Callable[[Tensor], Tensor] | None = None,
    ) -> Tokens:
        """Greedy continuation of each row (prompt included); ``on_step(step, logits [B, V])``
        sees each step, ``choose(logits) -> ids [B]`` replaces the argmax."""
        from .backends.base import greedy_generate

        counted = cast("Backend", _Counted(self.backend, self.memo.stats))
        return greedy_generate(counted, self.tokens(prompts),
                               max_new_tokens=max_new_tokens, edits=edits, on_step=on_step,
                               choose=choose)

    # -- for tests ------------------------------------------------------------------------

    def cache(
        self, prompt: str, *, components: Collection[Component] | None = None
    ) -> ActivationCache:
        """All activations of one prompt (every layer; every component the model has unless
        given)."""
        from .sites import all_sites

        tokens = self.tokens(prompt)
        if tokens.batch != 1:
            raise InterpError("interp_cache takes one prompt; call it once per prompt")
        comps = tuple(components) if components is not None else self.info.components
        run = self.run(tokens, read=all_sites(self.info.n_layers, comps))
        return ActivationCache(run, self.info)

    def generate(self, prompt: str, *, max_new_tokens: int = 20) -> str:
        """Greedy continuation text of one prompt (the prompt itself excluded)."""
        return self.generation(prompt, max_new_tokens=max_new_tokens).text

    def generation(self, prompt: str, *, max_new_tokens: int = 20) -> GenerationResult:
        """The greedy continuation of one prompt as a result: text, tokens and each step's
        margin (top-1 minus top-2 logit), for snapshots that know a near-tie. Memoised."""
        _one_prompt("generation", prompt)
        from .probes.generation import generation

        return self.remember(("generation", prompt, max_new_tokens),
                             lambda m: generation(m, prompt, max_new_tokens=max_new_tokens))

    # -- probes ---------------------------------------------------------------------------

    def dataset(self, kind: str, prompts: object, /, *args: Any, root: str | Path = ".",
                **kwargs: Any) -> DatasetResult:
        """``@pytest.mark.<kind>(*args, prompts=prompts, **kwargs)`` checked as the marker
        would: the per-prompt results and values, the ``estimate`` with its interval and the
        ``verdict``. Files are taken from ``root``."""
        from .dataset_expectation import DatasetExpectation
        from .registry import KINDS

        if kind not in KINDS:
            raise InterpError(f"no expectation kind {kind!r}: use one of "
                              f"{', '.join(KINDS.names())}")
        expectation = DatasetExpectation.parse(KINDS[kind].marker, args,
                                               {**kwargs, "prompts": prompts}, Path(root))
        result: DatasetResult = KINDS[kind].check(self, expectation)[0]
        return result

    def lens(
        self, prompt: str, *, lens: Lens | str = "logit",
        positions: int | Sequence[int] | None = -1,
    ) -> LensResult:
        """Every block's resid_post at ``positions`` (None = all) decoded through ``lens``
        (a Lens, ``"logit"``, or a tuned-lens folder), the final norm and the unembedding."""
        _one_prompt("lens", prompt)
        from .lenses import TunedLens, named_lens
        from .probes.lens import run_lens

        chosen = named_lens(lens)
        if isinstance(chosen, str):
            if chosen not in self._tuned_lenses:
                self._tuned_lenses[chosen] = TunedLens.load(chosen)
            chosen = self._tuned_lenses[chosen]
        used: Lens = chosen
        return self.remember(None, lambda m: run_lens(m, prompt, positions=positions, lens=used))

    def logit_lens(
        self, prompt: str, *, positions: int | Sequence[int] | None = -1
    ) -> LensResult:
        """Every block's resid_post decoded by final norm + unembedding, at ``positions``."""
        return self.lens(prompt, positions=positions)

    def tuned_lens(
        self, prompt: str, *, lens: str | TunedLens, positions: int | Sequence[int] | None = -1
    ) -> LensResult:
        """As ``logit_lens``, through a tuned lens (a tuned-lens folder or a TunedLens)."""
        return self.lens(prompt, lens=lens, positions=positions)

    def logit_diff(self, prompt: str, answer: str, foil: str) -> float:
        """logit(answer) - logit(foil) at the last position (memoised run)."""
        _one_prompt("logit_diff", prompt)
        from .probes.patching import logit_diff

        return logit_diff(self, prompt, answer, foil).value

    def activation_patching(
        self, clean: str, corrupted: str, *, answer: str | None = None, foil: str | None = None,
        site: Component = "resid_pre", per_position: bool = True,
        layers: Sequence[int] | None = None, positions: Sequence[int | str] | None = None,
        metric: Metric = "logit_diff", method: Literal["exact", "attribution"] = "exact",
        verify_top_k: int = 0,
    ) -> PatchingResult:
        """Patch each clean activation into the corrupted run: every (layer, position), or
        for head_out every (layer, head, position) (``per_position=False``: (layer, head),
        the head patched at every position at once); ``layers``/``positions`` restrict the
        sweep (other cells NaN). ``metric`` is read at the last position: ``"logit_diff"``
        (answer - foil), ``"logprob"``, ``"prob"``, ``"rank"`` (of answer), ``"kl"`` (from the
        clean run), or a callable [rows, vocab] -> [rows]. ``method="attribution"``
        estimates the grid to first order from one backward pass (attribution patching;
        ``metric`` differentiable); ``verify_top_k=K`` then patches its K largest cells
        exactly (``PatchingResult.exact``, ``.estimate_errors``). Batched, and memoised per
        argument set."""
        from . import metrics

        metrics.check(metric, foil)
        metrics.check_method(method, verify_top_k, metric)
        _one_prompt("activation_patching", clean, "clean")
        _one_prompt("activation_patching", corrupted, "corrupted")
        from .probes.attribution import attribution_patching
        from .probes.attribution import verify_top_k as verify
        from .probes.patching import activation_patching

        key = ("patching", clean, corrupted, answer, foil, site,
               per_position or site != "head_out", None if layers is None else tuple(layers),
               None if positions is None else tuple(positions), metric, method, verify_top_k)
        if method == "exact":
            return self.remember(key, lambda m: activation_patching(
                m, clean, corrupted, answer=answer, foil=foil, site=site,
                per_position=per_position, layers=layers, positions=positions, metric=metric,
            ))

        def estimate(m: InterpModel) -> PatchingResult:
            result = attribution_patching(
                m, clean, corrupted, answer=answer, foil=foil, site=site,
                per_position=per_position, layers=layers, positions=positions, metric=metric)
            return verify(m, result, verify_top_k, metric=metric) if verify_top_k else result

        return self.remember(key, estimate)

    def ablate(
        self, prompt: str, *, answer: str, foil: str | None = None,
        ablate: Sequence[object] | None = None, keep: Sequence[object] | None = None,
        method: Literal["zero", "mean", "resample"] = "mean", corrupted: str | None = None,
        reference: Sequence[str] | None = None, positions: Sequence[int | str] | None = None,
        metric: Metric | None = None, control: int = 0, seed: int = 0,
    ) -> AblationResult:
        """The metric at the last position (logit diff with a foil, else log P(answer)) with
        the parts in ``ablate`` ablated, or every part of their kinds but those in ``keep``:
        heads ``"L9H6"`` or (9, 6), attention layers ``"L9.attn"``, MLPs ``"L9.mlp"``;
        ``positions`` restricts the ablation. ``method``: ``"zero"``, ``"mean"`` (over
        ``reference`` prompts, default this prompt, every position) or ``"resample"`` (the
        value on ``corrupted``). ``control=N`` adds N seeded random sets of as many parts of
        each kind. Batched, and memoised."""
        _one_prompt("ablation", prompt)
        from . import metrics
        from .probes.ablation import Case
        from .sites import parse_part

        if (ablate is None) == (keep is None):
            raise InterpError("pass ablate=[parts] (they are necessary) or keep=[parts] (they "
                              "are sufficient), one of them")
        parts = tuple(parse_part(p) for p in (ablate if ablate is not None else keep) or ())
        measure = metric if metric is not None else ("logit_diff" if foil else "logprob")
        metrics.check(measure, foil)
        case = Case(prompt, answer, foil, corrupted,
                    None if positions is None else tuple(positions))
        return record(self.ablation_rows([case], parts, keep=keep is not None, method=method,
                                         metric=measure, reference=reference, control=control,
                                         seed=seed)[0])

    def ablation_rows(
        self, cases: Sequence[Case], parts: Sequence[Part], *, keep: bool = False,
        method: Literal["zero", "mean", "resample"] = "mean", metric: Metric = "logit_diff",
        reference: Sequence[str] | None = None, control: int = 0, seed: int = 0,
    ) -> list[AblationResult]:
        """``ablate`` on many prompts at once (a dataset's rows), batched; the same random
        sets for every prompt; ``reference`` defaults to every case's prompt. Memoised; each
        row's origin is noted (a list has none), so its snapshot has provenance."""
        from .probes.ablation import ablation

        cases, parts = tuple(cases), tuple(parts)
        ref = None if reference is None else tuple(reference)
        key = ("ablation", cases, parts, keep, method, metric, ref, control, seed)

        def compute(model: InterpModel) -> list[AblationResult]:
            return ablation(model, cases, parts, keep=keep, method=method, metric=metric,
                            reference=ref, control=control, seed=seed)

        def row(i: int) -> Callable[[InterpModel], AblationResult]:
            return lambda model: model.ablation_rows(  # a variant computes the batch once
                cases, parts, keep=keep, method=method, metric=metric, reference=ref,
                control=control, seed=seed)[i]

        rows = self.remember(key, compute)
        for i, result in enumerate(rows):
            remember_origin(result, self, row(i))
        return rows

    def ablation_sweep(
        self, prompt: str, *, answer: str, foil: str | None = None,
        kind: Literal["head", "attn", "mlp"] = "head",
        method: Literal["zero", "mean", "resample"] = "mean", corrupted: str | None = None,
        reference: Sequence[str] | None = None, positions: Sequence[int | str] | None = None,
        metric: Metric | None = None,
    ) -> AblationSweep:
        """Ablate each head (``kind="head"``), attention layer or MLP in turn, one batched
        row per part: ``.values`` [layers, heads] or [layers], ``.drop``, ``.top(k)``.
        Arguments as in ``ablate``. Memoised."""
        _one_prompt("ablation_sweep", prompt)
        from .probes.ablation import Case, ablation_sweep

        measure = metric if metric is not None else ("logit_diff" if foil else "logprob")
        from . import metrics

        metrics.check(measure, foil)
        if method == "resample" and corrupted is None:
            raise InterpError("method='resample' takes each part's value from corrupted=: pass "
                              "a corrupted prompt of the same length")
        case = Case(prompt, answer, foil, corrupted,
                    None if positions is None else tuple(positions))
        key = ("ablation_sweep", case, kind, method,
               None if reference is None else tuple(reference), measure)
        return self.remember(key, lambda m: ablation_sweep(
            m, case, kind, method=method, metric=measure, reference=reference))

    def patchscope(
        self, source: str, token: TokenSpec, *, layer: int | Iterable[int],
        target: str = IDENTITY_PROMPT, target_layer: int | Iterable[int] | None = None,
        target_token: TokenSpec = PLACEHOLDER, mapping: object = None, max_new_tokens: int = 5,
        expected: str | int | None = None,
    ) -> PatchscopeResult:
        """The hidden state of ``token`` after block ``layer`` in ``source``, patched over the
        target's ``target_token`` after block ``target_layer`` (default: the same layer) and
        decoded greedily. ``layer`` may be a list: one row per layer, batched."""
        return self.patchscope_sweep(
            source, token, layers=layer, target=target, target_layers=target_layer,
            target_token=target_token, mapping=mapping, max_new_tokens=max_new_tokens,
            expected=expected,
        )

    def patchscope_sweep(
        self, source: str, token: TokenSpec, *, layers: int | Iterable[int] | None = None,
        target_layers: int | Iterable[int] | None = None, mode: Literal["pairs", "grid"] = "pairs",
        target: str = IDENTITY_PROMPT, target_token: TokenSpec = PLACEHOLDER,
        mapping: object = None, max_new_tokens: int = 5, expected: str | int | None = None,
    ) -> PatchscopeResult:
        """Patchscopes over layer pairs in one batched generation: ``mode="pairs"`` zips
        ``layers`` with ``target_layers`` (obvs ``over_pairs``; None = the same layers),
        ``mode="grid"`` takes every combination (obvs ``over``). ``layers`` None = all.
        Memoised when there is no mapping."""
        _one_prompt("patchscope", source, "source")
        from .probes.patchscope import patchscope

        def compute(model: InterpModel) -> PatchscopeResult:
            return patchscope(
                model, source, token, layers=layers, target=target, target_layers=target_layers,
                mode=mode, target_token=target_token, mapping=mapping,  # type: ignore[arg-type]
                max_new_tokens=max_new_tokens, expected=expected,
            )

        if mapping is not None:  # a callable or matrix: not a memo key
            return self.remember(None, compute)
        key = ("patchscope", source, _frozen(token), _frozen(layers), _frozen(target_layers),
               mode, target, _frozen(target_token), max_new_tokens, expected)
        return self.remember(key, compute)

    def steering_vector(
        self, positive: str | Sequence[str], negative: str | Sequence[str], *, layer: int,
        site: Component = "resid_pre", position: int | str = -1,
    ) -> Tensor:
        """ActAdd: act(positive) - act(negative) at (layer, site, position) [d_model]; for
        lists of prompt pairs, the mean difference (CAA). Zero vectors are an error."""
        from .probes.steering import steering_vector

        return steering_vector(self, positive, negative, layer=layer, site=site,
                               position=position)

    def load_vector(self, path: str) -> Tensor:
        """A [d_model] steering vector from a .pt, .npy or .safetensors file."""
        from .probes.steering import load_vector

        return load_vector(path, self.info.d_model)

    def steer(
        self, prompt: str, vector: Tensor | str, *, layer: int,
        coef: float | Sequence[float] = 1.0, site: Component = "resid_pre",
        positions: Literal["all", "last"] | int = "all", normalize: bool = False,
        target: str | None = None, foil: str | None = None, max_new_tokens: int = 0,
        sample: bool = False, seed: int = 0, temperature: float = 1.0,
        metric: Metric | None = None,
    ) -> SteeringResult:
        """Add ``coef * vector`` (a tensor or a vector file) at (layer, site) on ``positions``
        ("all" includes generated tokens; "last", or int N for prompt positions N..) for each
        coefficient, batched; measure the change of logit(target) - logit(foil) (log P(target)
        without a foil), the KL, top tokens, and ``max_new_tokens`` of steered generation
        (greedy, or seeded sampling). ``normalize`` scales the vector to unit norm first.
        ``metric`` replaces the measure (see ``activation_patching``; ``"kl"`` is from the
        unsteered run). Memoised."""
        import hashlib
        _one_prompt("steering", prompt)

        from .probes.steering import steer

        if isinstance(vector, str):
            vector = self.load_vector(vector)
        coefs = (coef,) if isinstance(coef, int | float) else tuple(coef)
        digest = hashlib.sha1(vector.detach().float().cpu().numpy().tobytes()).hexdigest()
        key = ("steering", prompt, digest, layer, coefs, site, positions, normalize, target,
               foil, max_new_tokens, sample, seed, temperature, metric)
        steering = vector
        return self.remember(key, lambda m: steer(
            m, prompt, steering, layer=layer, coefs=coefs, site=site, positions=positions,
            normalize=normalize, target=target, foil=foil, max_new_tokens=max_new_tokens,
            sample=sample, seed=seed, temperature=temperature, metric=metric,
        ))

    def attention(
        self, prompt: str | None = None, *, n: int = 20, seed: int = 0,
        thresholds: dict[str, float] | None = None,
    ) -> AttentionResult:
        """Every head's entropy, first-token, previous-token and self scores on ``prompt``
        (None = ``n`` seeded random tokens repeated twice), its induction score on that
        repeated sequence, and a label per head (``thresholds`` override the defaults)."""
        if prompt is not None:
            _one_prompt("attention", prompt)
        from .probes.attention import attention

        return self.remember(None, lambda m: attention(m, prompt, n=n, seed=seed,
                                                       thresholds=thresholds))


class _Counted:
    """A backend whose forward passes (``run`` calls) count in ``stats.passes``."""

    def __init__(self, backend: Backend, stats: MemoStats) -> None:
        self._backend, self._stats = backend, stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def run(self, *args: Any, **kwargs: Any) -> Run:
        self._stats.passes += 1
        return self._backend.run(*args, **kwargs)


def _one_prompt(kind: str, value: object, name: str = "prompt") -> None:
    """Probes read one prompt; a list gets one line naming the dataset way instead."""
    if not isinstance(value, str):
        got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, Sized) else \
            repr(value)
        raise InterpError(f"{kind} takes one {name} string, got {got}: for a dataset use "
                          f"@pytest.mark.{kind}(prompts=...) or interp_model.dataset("
                          f"{kind!r}, prompts, ...)")


def _frozen(x: object) -> object:
    """A memo-key form of an argument: iterables (not strings) as tuples."""
    return tuple(x) if isinstance(x, Iterable) and not isinstance(x, str) else x


def use_deterministic_algorithms() -> None:
    """Make torch pick deterministic kernels (cuBLAS needs its workspace set before use).

    warn_only: an op without a deterministic kernel warns, naming itself, rather than failing
    a test that does not depend on it."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def load_backend(request: ModelRequest, provided: object = None) -> Backend:
    """Resolve, load and wrap a model as the requested backend; ``provided`` is a model
    object a conftest supplied for the spec (``pytest_interp_load_model``)."""
    import torch

    from .backends.loading import from_object, load_hf, resolve_spec

    if provided is not None:
        loaded, native = from_object(request.spec, provided, request.backend)
        if request.perturbation == "reinit":
            import dataclasses

            loaded, native = dataclasses.replace(loaded, model=reinitialised(loaded.model)), None
        elif request.perturbation:
            perturb_weights(loaded.model, request.perturbation)
        if request.backend == "nnsight":
            from .backends.nnsight import NNsightBackend

            return NNsightBackend(loaded, prepend_bos=request.prepend_bos, lm=native)
        from .backends.transformer_lens import TransformerLensBackend

        return TransformerLensBackend(loaded, prepend_bos=request.prepend_bos, bridge=native)

    if request.remote:
        from .backends.nnsight import NNsightBackend

        loaded = load_hf(resolve_spec(request.spec, remote=True), dtype=request.dtype,
                         weights=False)
        return NNsightBackend(loaded, prepend_bos=request.prepend_bos, remote=True)
    device = request.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelSpecError(
            "--interp-device cuda, but torch sees no CUDA device here: "
            "use --interp-device cpu (or auto)"
        )
    loaded = load_hf(resolve_spec(request.spec), device=device, dtype=request.dtype)
    if request.perturbation == "reinit":
        import dataclasses

        loaded = dataclasses.replace(loaded, model=reinitialised(loaded.model))
    elif request.perturbation:
        perturb_weights(loaded.model, request.perturbation)
    if request.backend == "nnsight":
        from .backends.nnsight import NNsightBackend

        return NNsightBackend(loaded, prepend_bos=request.prepend_bos)
    from .backends.transformer_lens import TransformerLensBackend

    return TransformerLensBackend(loaded, prepend_bos=request.prepend_bos)


def reinitialised(model: Any, seed: int = 20240601) -> Any:
    """A fresh model of ``model``'s config, randomly initialised (seeded) the way transformers
    initialises it: the control for ``--interp-controls`` (it learned nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config, torch_dtype=param.dtype)
    return fresh.to(param.device).eval()


def perturb_weights(model: Any, perturbation: str) -> None:
    """Change a loaded model's weights in place, benignly: ``"bfloat16"`` rounds every weight
    through bfloat16; ``"noise:R"`` multiplies each by (1 + R * N(0, 1)), seeded."""
    import torch

    with torch.no_grad():
        if perturbation == "bfloat16":
            for param in model.parameters():
                param.copy_(param.to(torch.bfloat16).to(param.dtype))
            return
        kind, _, value = perturbation.partition(":")
        if kind != "noise":
            raise InterpError(f"unknown perturbation {perturbation!r}: use bfloat16 or noise:R")
        generator = torch.Generator().manual_seed(0)
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator).to(param)
            param.mul_(1 + float(value) * noise)


Provider = Callable[[ModelRequest], object]


@dataclass
class ModelPool:
    """One InterpModel per distinct request for the whole session (per xdist worker).

    ``provide(request)`` returns a model object for the request, or None to load its spec
    (the plugin asks the ``pytest_interp_load_model`` hook)."""

    memory_bytes: int = DEFAULT_MEMO_BYTES
    deterministic: bool = True
    provide: Provider | None = None
    _models: dict[ModelRequest, InterpModel] = field(default_factory=dict)
    _failures: dict[ModelRequest, InterpError] = field(default_factory=dict)
    _released: list[InterpModel] = field(default_factory=list)

    def get(self, request: ModelRequest) -> InterpModel:
        if request in self._failures:
            raise self._failures[request]
        if request not in self._models:
            if self.deterministic:
                use_deterministic_algorithms()
            try:
                provided = self.provide(request) if self.provide is not None else None
                backend = load_backend(request, provided)
            except InterpError as exc:
                self._failures[request] = exc
                raise
            self._models[request] = InterpModel(
                backend, request=request, memory_bytes=self.memory_bytes
            )
        return self._models[request]

    def loaded(self) -> list[InterpModel]:
        return list(self._models.values())

    def release(self, spec: str) -> None:
        """Close every model loaded from ``spec`` (its variants too): a checkpoint series
        holds about one model at a time. Asked for again, it loads again."""
        import gc

        for request in [r for r in self._models if r.spec == spec]:
            model = self._models.pop(request)
            model.close()
            self._released.append(model)
        gc.collect()

    def seen(self) -> list[InterpModel]:
        """Every model of the session: the released ones, then the loaded ones."""
        return [*self._released, *self._models.values()]

"""model layer: the ``interp_model`` facade: one loaded model, its memoised runs and results, the
probes as methods (each builds its probe's arguments, looks up the memo, calls it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Hashable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import checks, metrics
from .backends.memory import rows_within
from .dictionaries import LATENT_VECTOR
from .errors import InterpError
from .lenses import TunedLens, loaded_lens
from .memo import ActivationCache, Counted, RunMemo
from .model_circuits import CircuitProbes
from .model_dictionaries import DictionaryProbes
from .record import BatchSplit, record, remember_origin
from .settings import DEFAULT_MEMO_BYTES, ModelRequest
from .sites import all_sites
from .vocab import Vocab

if TYPE_CHECKING:
    from torch import Tensor

    from .backends.base import Backend, Edit, ModelInfo, Run, Start, Tokens
    from .backends.splice import Splice
    from .dictionaries.dictionary import Dictionary
    from .lenses import Lens
    from .probes.ablation import Ablation, AblationSweep
    from .results import (
        AblationResult,
        AttentionResult,
        GenerationResult,
        LensResult,
        PatchingResult,
        PatchscopeResult,
        SteeringResult,
        TokenSpec,
    )
    from .sites import Component, Site

T = TypeVar("T")


class InterpModel(DictionaryProbes, CircuitProbes):
    """A loaded model as tests see it: tokenize, memoised runs, activations, generation, and
    the probes as methods (each result memoised per argument set and recorded for the report).

    It is the ``Runner`` that probes are written against (``pytest_interp.probes.runner``).
    """

    def __init__(
        self, backend: Backend, *, request: ModelRequest | None = None,
        memory_bytes: int = DEFAULT_MEMO_BYTES, root: Path | None = None,
    ) -> None:
        self.backend = backend
        self.request = request
        self.root = root  # relative dictionary paths are found here first, then in the cwd
        self.memo = RunMemo(memory_bytes)
        self._vocab: Vocab | None = None
        self.tuned_lenses: dict[str, TunedLens] = {}  # loaded, by folder
        self.dictionaries: dict[tuple[str, str | None], Dictionary] = {}  # by (sae, labels)
        self._provenance: dict[str, str] | None = None
        self._info: ModelInfo | None = None  # set by close()

    def __repr__(self) -> str:
        i = self.info
        return (f"<InterpModel {i.name} ({i.architecture}, {i.n_layers} layers) via {i.backend} "
                f"on {i.device}/{i.dtype}>")

    def remember(self, key: Hashable | None, compute: Callable[[InterpModel], T]) -> T:
        """``compute(self)``'s result, computed once per ``key`` for this model (None: not
        memoised), recorded for the running test's report, and remembered as the recipe of
        that result: a snapshot re-runs ``compute`` on variants of the model to measure its
        noise floor. Probes with the same arguments are not run twice while the memo (bounded
        with the runs by ``--interp-memory``) holds their result."""
        result = compute(self) if key is None else self.memo.result(key, lambda: compute(self))
        # memoised on the model that re-runs it (a series' baseline, a noise-floor variant)
        remember_origin(result, self, compute if key is None else
                        lambda m: m.remember(key, compute))
        return record(result)

    def forget(self) -> None:
        """Drop every memoised run and result (benchmarks time work, not the memo)."""
        self.memo.clear()

    def close(self) -> None:
        """Free the weights, runs and results; ``info`` and the memo's counts stay (the
        session summary names released models too). Any other use after this fails."""
        self._info = self.backend.info
        self.forget()
        self.tuned_lenses.clear()
        self.dictionaries.clear()
        del self.backend

    @property
    def provenance(self) -> dict[str, str]:
        """What this model's results come from: weights and tokenizer fingerprints, backend,
        and the numeric libraries (kept on each snapshot's metadata line)."""
        if self._provenance is None:

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
            # the tokenizer alone where the backend offers it: results outlive the weights
            text = getattr(self.backend, "text", self.backend)
            decode = text.decode
            self._vocab = Vocab(
                self.info.d_vocab, lru_cache(maxsize=None)(lambda i: decode([i])),
                text.encode, decode, text.special_ids,
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
        edits: Sequence[Edit] = (), logits_to_keep: int = 0,
    ) -> Run:
        """One batched forward pass, memoised per (tokens, edits, logits_to_keep: the last N
        positions' logits, 0 all); never repeated."""
        from .backends.base import edits_key

        tokens = self.tokens(prompts)
        key = (tokens.ids, edits_key(edits)) + ((logits_to_keep,) if logits_to_keep else ())
        read = set(read)
        hit = self.memo.get(key, read)
        if hit is not None:
            return hit
        if had := self.memo.sites(key):  # a second pass for new sites: read them at every layer
            read |= set(all_sites(self.info.n_layers, {site.component for site in read}))
        run = self.backend.run(tokens, read=read | had, edits=edits,
                               logits_to_keep=logits_to_keep)
        self.memo.stats.passes += 1
        self.memo.put(key, run)
        return run

    def forward(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit | Splice] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        """One batched forward pass, not memoised (for rows used once, e.g. sweep rows);
        ``grad`` runs it with autograd (see ``Backend.run``)."""
        self.memo.stats.passes += 1
        return self.backend.run(tokens, read=read, edits=edits, start=start,
                                logits_to_keep=logits_to_keep, past=past, keep_past=keep_past,
                                grad=grad)

    def rows_per_pass(self, positions: int, wanted: int, cap: int, *, logits: int = 1) -> int:
        """Rows per forward pass within ``--interp-memory`` (see the Runner)."""
        rows = rows_within(self.info, self.memo.max_bytes, positions, cap, logits)
        if rows < min(wanted, cap):  # counted for the summary, noted in the report
            self.memo.stats.split += 1
            record(BatchSplit(wanted, rows, self.memo.max_bytes))
        return rows

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
        from .backends.generate import greedy_generate

        counted = cast("Backend", Counted(self.backend, self.memo.stats))
        return greedy_generate(counted, self.tokens(prompts),
                               max_new_tokens=max_new_tokens, edits=edits, on_step=on_step,
                               choose=choose)

    # -- for tests ------------------------------------------------------------------------

    def cache(self, prompt: str, *, components: Collection[Component] | None = None
              ) -> ActivationCache:
        """All activations of one prompt (every layer; the model's components unless given)."""
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
        checks.one_prompt("generation", prompt)
        from .probes.generation import generation

        return self.remember(("generation", prompt, max_new_tokens),
                             lambda m: generation(m, prompt, max_new_tokens=max_new_tokens))

    # -- probes ---------------------------------------------------------------------------

    def lens(
        self, prompt: str, *, lens: Lens | str = "logit",
        positions: int | Sequence[int] | None = -1,
    ) -> LensResult:
        """Every block's resid_post at ``positions`` (None = all) decoded through ``lens``
        (a Lens, ``"logit"``, or a tuned-lens folder), the final norm and the unembedding."""
        checks.one_prompt("lens", prompt)
        from .probes.lens import run_lens

        used = loaded_lens(lens, self.tuned_lenses)
        return self.remember(None, lambda m: run_lens(m, prompt, positions=positions, lens=used))

    def logit_lens(self, prompt: str, *, positions: int | Sequence[int] | None = -1) -> LensResult:
        """Every block's resid_post decoded by final norm + unembedding, at ``positions``."""
        return self.lens(prompt, positions=positions)

    def tuned_lens(
        self, prompt: str, *, lens: str | TunedLens, positions: int | Sequence[int] | None = -1
    ) -> LensResult:
        """As ``logit_lens``, through a tuned lens (a tuned-lens folder or a TunedLens)."""
        return self.lens(prompt, lens=lens, positions=positions)

    def logit_diff(self, prompt: str, answer: str, foil: str) -> float:
        """logit(answer) - logit(foil) at the last position (memoised run)."""
        checks.one_prompt("logit_diff", prompt)
        from .probes.logit_diff import logit_diff

        return logit_diff(self, prompt, answer, foil).value

    def activation_patching(self, clean: str, corrupted: str, **options: Any) -> PatchingResult:
        """Patch each clean activation into the corrupted run (``probes.patching.Patching``
        names every option: answer, foil, site, per_position, layers, positions, metric,
        method, verify_top_k). ``metric`` is read at the last position: ``"logit_diff"``
        (answer - foil), ``"logprob"``, ``"prob"``, ``"rank"`` (of answer), ``"kl"`` (from the
        clean run), or a callable [rows, vocab] -> [rows]. ``method="attribution"``
        estimates the grid to first order from one backward pass; ``verify_top_k=K`` then
        patches its K largest cells exactly (``PatchingResult.exact``, ``.estimate_errors``).
        Batched, and memoised per spec."""
        checks.one_prompt("activation_patching", clean, "clean")
        checks.one_prompt("activation_patching", corrupted, "corrupted")
        from .probes.attribution import estimated
        from .probes.patching import Patching, activation_patching

        spec = checks.build(Patching, "activation_patching",
                            {"clean": clean, "corrupted": corrupted, **options})
        metrics.check(spec.metric, spec.foil)
        metrics.check_method(spec.method, spec.verify_top_k, spec.metric)
        probe = activation_patching if spec.method == "exact" else estimated
        return self.remember(spec, lambda m: probe(m, spec))

    def ablate(self, prompt: str, **options: Any) -> AblationResult:
        """The metric with parts ablated, or kept (``probes.ablation.Ablate`` names every
        option: answer, foil, ablate, keep, method, corrupted, reference, positions, metric,
        control, seed). Batched, and memoised."""
        checks.one_prompt("ablation", prompt)
        from .probes.ablation import Ablate

        request = checks.build(Ablate, "ablate", {"prompt": prompt, **options})
        return record(self.ablation_rows(request.spec())[0])

    def ablation_rows(self, spec: Ablation) -> list[AblationResult]:
        """``spec``'s results, one per case (a dataset's rows), batched; the same random sets
        for every case. Memoised; each row's origin is noted (a list has none), so its
        snapshot has provenance."""
        from .probes.ablation import ablation

        rows = self.remember(spec, lambda m: ablation(m, spec))
        for i, result in enumerate(rows):
            remember_origin(result, self, _row(spec, i))
        return rows

    def ablation_sweep(self, prompt: str, **options: Any) -> AblationSweep:
        """Ablate each head (``kind="head"``), attention layer or MLP in turn, one batched
        row per part: ``.values`` [layers, heads] or [layers], ``.drop``, ``.top(k)``
        (``probes.ablation.Sweep`` names every option). Memoised."""
        checks.one_prompt("ablation_sweep", prompt)
        from .probes.ablation import Sweep, ablation_sweep

        spec = checks.build(Sweep, "ablation_sweep", {"prompt": prompt, **options})
        metrics.check(spec.metric or "", spec.foil)
        if spec.method == "resample" and spec.corrupted is None:
            raise InterpError("method='resample' takes each part's value from corrupted=: pass "
                              "a corrupted prompt of the same length")
        return self.remember(spec, lambda m: ablation_sweep(m, spec))

    def patchscope(self, source: str, token: TokenSpec, **options: Any) -> PatchscopeResult:
        """The hidden state of ``token`` after block ``layer`` in ``source``, patched over the
        target's ``target_token`` after block ``target_layer`` (default: the same layer) and
        decoded greedily. ``layer`` may be a list: one row per layer, batched. The other
        options are ``patchscope_sweep``'s."""
        renamed = {"layer": "layers", "target_layer": "target_layers"}
        return self.patchscope_sweep(source, token, **{renamed.get(k, k): v
                                                      for k, v in options.items()})

    def patchscope_sweep(self, source: str, token: TokenSpec,
                         **options: Any) -> PatchscopeResult:
        """Patchscopes over layer pairs in one batched generation (``probes.patchscope.
        Patchscope`` names every option: layers, target, target_layers, mode, target_token,
        mapping, max_new_tokens, expected). Memoised when there is no mapping."""
        checks.one_prompt("patchscope", source, "source")
        from .probes.patchscope import Patchscope, patchscope

        spec = checks.build(Patchscope, "patchscope", {"source": source, "token": token,
                                                       **options})
        return self.remember(spec if spec.mapping is None else None,  # a mapping: no key
                             lambda m: patchscope(m, spec))

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
        """A [d_model] steering vector from a .pt, .npy or .safetensors file, or a dictionary
        latent's decoder direction, ``sae:PATH#LATENT``."""
        from .probes.steering import load_vector

        if path.startswith(LATENT_VECTOR):
            return self.latent_vector(path)
        return load_vector(path, self.info.d_model)

    def steer(self, prompt: str, vector: Tensor | str, **options: Any) -> SteeringResult:
        """Add ``coef * vector`` (a tensor or a vector file) at (layer, site) for each
        coefficient, batched, and measure the change (``probes.steering.Steering`` names
        every option: layer, coef, site, positions, normalize, target, foil, max_new_tokens,
        sample, seed, temperature, top_k, metric). Memoised."""
        checks.one_prompt("steering", prompt)
        from .probes.steering import Steering, Vector, steer

        tensor = self.load_vector(vector) if isinstance(vector, str) else vector
        spec = checks.build(Steering, "steer", {"prompt": prompt, "vector": Vector(tensor),
                                                **options})
        return self.remember(spec, lambda m: steer(m, spec))

    def attention(
        self, prompt: str | None = None, *, n: int = 20, seed: int = 0,
        thresholds: dict[str, float] | None = None,
    ) -> AttentionResult:
        """Every head's entropy, first-token, previous-token and self scores on ``prompt``
        (None = ``n`` seeded random tokens repeated twice), its induction score on that
        repeated sequence, and a label per head (``thresholds`` override the defaults)."""
        if prompt is not None:
            checks.one_prompt("attention", prompt)
        from .probes.attention import attention

        return self.remember(None, lambda m: attention(m, prompt, n=n, seed=seed,
                                                       thresholds=thresholds))


def _row(spec: Ablation, i: int) -> Callable[[InterpModel], AblationResult]:
    """The recipe of row ``i`` of an ablation (a variant computes the batch once)."""
    return lambda model: model.ablation_rows(spec)[i]

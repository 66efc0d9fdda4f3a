"""probes layer: sparse dictionaries on a model: the active latents of prompts (``features``),
how well a dictionary stands in for its site (``sae_fidelity``), and each latent's attribution
to a metric (``feature_attribution``). One batched forward reads the dictionary's site for
all prompts of a token length; nothing loops over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import checks, metrics
from ..backends.base import Edit, Tokens
from ..dictionaries.dictionary import Dictionary
from ..errors import InterpError
from ..results import AblationResult
from ..results.features import FeatureAttributionResult, FeaturesResult, FidelityResult
from .ablation import Case, case_positions
from .batching import by_length
from .runner import Runner

LABELLED = 10  # latents labelled per position
LABEL_TOKENS = 3  # tokens of a decoder direction's label
LABEL_CHUNK = 256  # decoder directions unembedded at once


@dataclass(frozen=True)
class Features:
    """``interp_model.features``'s arguments: the prompt, the dictionary (a path or hub path)
    and a JSON file of latent labels ``{"4512": "capital cities"}`` (None: a ``labels.json``
    beside the dictionary, else each latent's top tokens through the unembedding)."""

    prompt: str
    sae: str
    labels: str | None = None

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("sae", self.sae)


@dataclass(frozen=True)
class Fidelity:
    """``interp_model.sae_fidelity``'s arguments: ``skip`` leading positions are neither
    spliced nor measured (the first is the attention sink, with a norm ~100x the others',
    left out of SAE training)."""

    texts: tuple[str, ...]
    sae: str
    skip: int = 1

    def __post_init__(self) -> None:
        if not self.texts:
            raise InterpError("sae_fidelity needs at least one text")
        for text in self.texts:
            checks.text("text", text)
        checks.text("sae", self.sae)
        if not checks.is_int(self.skip) or self.skip < 0:
            raise InterpError(f"skip must be an int >= 0, got {self.skip!r}")


@dataclass(frozen=True)
class FeatureAttribution:
    """``interp_model.feature_attribution``'s arguments: the metric at the last position (as
    activation patching names it), ``verify_top_k`` nodes patched exactly, and ``skip``
    leading positions left as they are (the attention sink, which SAEs are not trained on:
    no nodes there)."""

    prompt: str
    sae: str
    answer: str | None = None
    foil: str | None = None
    metric: metrics.Metric = "logit_diff"
    verify_top_k: int = 0
    labels: str | None = None
    skip: int = 1

    def __post_init__(self) -> None:
        metrics.check(self.metric, self.foil)
        if self.metric == "rank":
            raise InterpError("metric rank has no gradient: feature attribution needs a "
                              "differentiable metric (logit_diff, logprob, prob, kl)")
        if isinstance(self.verify_top_k, bool) or not isinstance(self.verify_top_k, int) \
                or self.verify_top_k < 0:
            raise InterpError(f"verify_top_k must be an int >= 0, got {self.verify_top_k!r}")
        if not checks.is_int(self.skip) or self.skip < 0:
            raise InterpError(f"skip must be an int >= 0, got {self.skip!r}")


def sparse_rows(latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """[P, n] dense latents -> (indices, values) [P, m]: each row's active latents, strongest
    first, padded with -1 / 0."""
    width = max(1, int((latents > 0).sum(-1).max()))
    values, index = latents.topk(min(width, latents.shape[-1]), dim=-1)
    index = torch.where(values > 0, index, -1)
    return index.cpu().numpy().astype(np.int64), values.clamp(min=0).cpu().numpy()


def latent_labels(model: Runner, dictionary: Dictionary, latents: set[int]) -> dict[int, str]:
    """A label per latent: the dictionary's own (a labels file), else the top tokens its
    decoder direction promotes through the final norm and the unembedding (computed once per
    latent and dictionary)."""
    given, cache = dictionary.labels, dictionary.decoder_labels
    missing = sorted(i for i in latents if i not in given and i not in cache)
    vocab = model.vocab
    with torch.inference_mode():
        for lo in range(0, len(missing), LABEL_CHUNK):
            chunk = missing[lo:lo + LABEL_CHUNK]
            directions = dictionary.weights["W_dec"][chunk] / dictionary.scale
            top = model.unembed(directions.to(model.info.device)).float()
            ids = top.topk(LABEL_TOKENS, dim=-1).indices.cpu()
            for latent, row in zip(chunk, ids, strict=True):
                cache[latent] = " ".join(repr(vocab.decode_one(int(t))) for t in row)
    return {i: given.get(i) or cache[i] for i in latents}


def site_batches(model: Runner, prompts: Sequence[str], dictionary: Dictionary
                 ) -> list[tuple[list[int], Tokens, torch.Tensor]]:
    """(prompt indices, tokens, activations at the dictionary's site [B, P, d]) per batch:
    one memoised forward per token length (split by --interp-memory) keeping one position's
    logits."""
    tokens = [model.tokens(p) for p in prompts]
    out = []
    for group in by_length(tokens):
        rows = model.rows_per_pass(tokens[group[0]].length, len(group), 64)
        for lo in range(0, len(group), rows):
            chunk = group[lo:lo + rows]
            batch = Tokens.stack([tokens[i] for i in chunk])
            run = model.run(batch, read={dictionary.site}, logits_to_keep=1)
            out.append((chunk, batch, run.acts[dictionary.site]))
    return out


def features(model: Runner, dictionary: Dictionary, prompts: Sequence[str],
             asked: Sequence[int] = ()) -> list[FeaturesResult]:
    """Each prompt's active latents (``Features``), batched; ``asked`` latents are labelled
    too."""
    dictionary = dictionary.fitted(model.info)
    results: list[FeaturesResult | None] = [None] * len(prompts)
    with torch.inference_mode():
        for chunk, batch, acts in site_batches(model, prompts, dictionary):
            latents = dictionary.to(acts.device).encode(acts)
            rows = [sparse_rows(latents[row]) for row in range(len(chunk))]
            shown = [{int(x) for x in index[:, :LABELLED].ravel() if x >= 0} | set(asked)
                     for index, _ in rows]
            labels = latent_labels(model, dictionary, set().union(*shown))  # one unembedding
            for row, i in enumerate(chunk):
                index, values = rows[row]
                results[i] = FeaturesResult(
                    model.info.name, dictionary.name, str(dictionary.site),
                    dictionary.n_latents, prompts[i], batch.strs[row], index, values,
                    {k: labels[k] for k in shown[row]})
    return [r for r in results if r is not None]


def fidelity(model: Runner, dictionary: Dictionary, spec: Fidelity) -> list[FidelityResult]:
    """Each text's reconstruction error, L0, and loss with the reconstruction spliced in and
    with the error term kept (``Fidelity``): three forward passes per batch of one length."""
    dictionary = dictionary.fitted(model.info)
    tokens = [model.tokens(t) for t in spec.texts]
    short = [t for t, tok in zip(spec.texts, tokens, strict=True) if tok.length < spec.skip + 2]
    if short:
        raise InterpError(f"sae_fidelity: {short[0]!r} has fewer than skip + 2 = "
                          f"{spec.skip + 2} tokens: give longer texts, or lower skip=")
    results: list[FidelityResult | None] = [None] * len(tokens)
    sae = dictionary.to(model.info.device)
    with torch.inference_mode():
        for group in by_length(tokens):
            length = tokens[group[0]].length
            rows = model.rows_per_pass(length, len(group), 16, logits=length)
            for lo in range(0, len(group), rows):
                chunk = group[lo:lo + rows]
                batch = Tokens.stack([tokens[i] for i in chunk])
                texts = [spec.texts[i] for i in chunk]
                for i, result in zip(chunk, _fidelity_batch(model, sae, batch, texts, spec.skip),
                                     strict=True):
                    results[i] = result
    return [r for r in results if r is not None]


def _fidelity_batch(model: Runner, sae: Dictionary, batch: Tokens, texts: list[str],
                    skip: int) -> list[FidelityResult]:
    sites = {sae.site, sae.out_site}
    clean = model.run(batch, read=sites)
    x = clean.acts[sae.site][:, skip:].float()
    y = clean.acts[sae.out_site][:, skip:].float()
    latents = sae.encode(x)
    y_hat = sae.decode(latents, x)
    positions = tuple(range(skip, batch.length))
    spliced = model.forward(batch, edits=[Edit(sae.out_site, y_hat, positions=positions)])
    kept = model.forward(batch, edits=[Edit(sae.out_site, y_hat + (y - y_hat),
                                            positions=positions)])
    ids = batch.tensor(clean.logits.device)[:, skip + 1:]
    losses = [_losses(run.logits[:, skip:-1].float(), ids)
              for run in (clean, spliced, kept)]
    clean_logp = torch.log_softmax(clean.logits[:, skip:-1].float(), -1)
    spliced_logp = torch.log_softmax(spliced.logits[:, skip:-1].float(), -1)
    kl = (clean_logp.exp() * (clean_logp - spliced_logp)).sum(-1).mean(-1)
    sse = (y - y_hat).double().pow(2).sum((-1, -2))
    y_sum, y_sq = y.double().sum(1).cpu().numpy(), y.double().pow(2).sum((-1, -2))
    l0 = (latents > 0).sum(-1).float().mean(-1)
    return [FidelityResult(model.info.name, sae.name, str(sae.site), (texts[row],),
                           batch.length - skip - 1, batch.length - skip, float(sse[row]),
                           y_sum[row], float(y_sq[row]), float(l0[row]),
                           float(losses[0][row]), float(losses[1][row]), float(losses[2][row]),
                           float(kl[row]))
            for row in range(batch.batch)]


def _losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each row's mean next-token cross-entropy [B] of ``logits`` [B, P, V] for ``ids``."""
    logp = torch.log_softmax(logits, -1)
    return -logp.gather(-1, ids[..., None])[..., 0].mean(-1)


def feature_attribution(model: Runner, dictionary: Dictionary, spec: FeatureAttribution
                        ) -> FeatureAttributionResult:
    """Every active latent's activation x gradient of the metric at every position, the error
    term as one node per position (one forward and one backward pass, the reconstruction plus
    the error spliced in: the clean run itself), then the ``verify_top_k`` largest nodes each
    zeroed in an exact run (one batched forward)."""
    sae = dictionary.fitted(model.info).to(model.info.device)
    tokens = model.tokens(spec.prompt)
    clean = model.run(tokens, read={sae.site, sae.out_site}, logits_to_keep=1)
    measure = metrics.build(spec.metric, model.vocab, spec.answer, spec.foil,
                            clean.logits[0, -1])
    x = clean.acts[sae.site].float()
    skip = min(spec.skip, tokens.length - 1)
    with torch.enable_grad():
        latents = sae.encode(x).detach().requires_grad_(True)
        y_hat = sae.decode(latents, x)
        error = (clean.acts[sae.out_site].float() - y_hat).detach().requires_grad_(True)
        spliced = (y_hat + error)[:, skip:]  # the clean activations, as latents + error
        run = model.forward(tokens, edits=[Edit(sae.out_site, spliced,
                                                positions=tuple(range(skip, tokens.length)))],
                            logits_to_keep=1, grad=True)
        value = measure(run.logits[:, -1])
        value.sum().backward()
    assert latents.grad is not None and error.grad is not None
    scores = (latents * latents.grad).detach()[0]
    index, _ = sparse_rows(latents.detach()[0])
    index[:skip] = -1  # not spliced: no nodes
    gathered = scores.gather(-1, torch.from_numpy(index).clamp(min=0).to(scores.device))
    node_scores = torch.where(torch.from_numpy(index >= 0).to(scores.device), gathered, 0.0)
    result = FeatureAttributionResult(
        model.info.name, sae.name, metrics.describe(metrics.label(spec.metric), spec.answer,
                                                    spec.foil),
        spec.prompt, tokens.strs[0], float(value.detach()[0]), index,
        node_scores.cpu().numpy(), (error * error.grad).sum(-1).detach()[0].cpu().numpy())
    top = result.top(spec.verify_top_k) if spec.verify_top_k else []
    exact = _zeroed_drops(model, sae, tokens, latents.detach(), x, top, measure,
                          result.clean_metric)
    shown = {latent for _, latent, _ in result.top(LABELLED)}
    return replace(result, exact=exact,
                   labels=latent_labels(model, dictionary, shown))


def _zeroed_drops(model: Runner, sae: Dictionary, tokens: Tokens, latents: torch.Tensor,
                  x: torch.Tensor, nodes: list[tuple[int, int, float]],
                  measure: metrics.MetricFn, clean: float) -> dict[tuple[int, int], float]:
    """The metric drop of each (position, latent) node zeroed alone, exactly: one row per
    node, the reconstruction's change added at the node's position."""
    if not nodes:
        return {}
    edits = []
    with torch.inference_mode():
        full = sae.decode(latents, x)
        for row, (position, latent, _) in enumerate(nodes):
            zeroed = latents.clone()
            zeroed[0, position, latent] = 0.0
            delta = sae.decode(zeroed, x) - full
            edits.append(Edit(sae.out_site, delta[0, position], mode="add",
                              positions=(position,), rows=(row,)))
        run = model.forward(tokens.repeat(len(nodes)), edits=edits, logits_to_keep=1)
        values = measure(run.logits[:, -1])
    return {(p, latent): clean - float(v) for (p, latent, _), v in zip(nodes, values, strict=True)}


@dataclass(frozen=True)
class LatentAblation:
    """A latent ablation (the ablation kind with ``sae=``): per case, the metric with
    ``latents`` zeroed or set to their mean activation over ``reference`` (default: the cases'
    prompts) at every position from ``skip`` on (or the case's positions), the change put in
    through the decoder at the dictionary's output site; and with ``control`` seeded random
    sets of as many latents, drawn from those active on the cases."""

    cases: tuple[Case, ...]
    sae: str
    latents: tuple[int, ...]
    method: str = "mean"
    metric: metrics.Metric = "logit_diff"
    reference: tuple[str, ...] | None = None
    control: int = 0
    seed: int = 0
    skip: int = 1


def latent_ablation(model: Runner, dictionary: Dictionary, spec: LatentAblation
                    ) -> list[AblationResult]:
    """The results ``spec`` asks for, one per case: one clean pass per token length (memoised)
    and one batched pass of every (case, set) row."""
    sae = dictionary.fitted(model.info).to(model.info.device)
    chosen = sorted({sae.check_latent(i) for i in spec.latents})
    tokens = [model.tokens(c.prompt) for c in spec.cases]
    with torch.inference_mode():
        found = {}  # case -> (latents [P, n], input [P, d], logits [V]) of the clean run
        for group in by_length(tokens):
            batch = Tokens.stack([tokens[i] for i in group])
            clean = model.run(batch, read={sae.site}, logits_to_keep=1)
            x = clean.acts[sae.site].float()
            latents = sae.encode(x)  # the batch at once
            for row, i in enumerate(group):
                found[i] = (latents[row], x[row], clean.logits[row, -1])
        active = sorted({int(j) for latents, _, _ in found.values()
                         for j in torch.nonzero(latents[spec.skip:].amax(0) > 0)[:, 0]}
                        - set(chosen))
        sets = [chosen, *_random_latent_sets(active, len(chosen), spec.control, spec.seed)]
        target = _latent_targets(model, sae, spec, found)
        clean_values, values = np.zeros(len(tokens)), np.zeros((len(tokens), len(sets)))
        measures = {}
        for i, (_, _, logits) in found.items():
            case = spec.cases[i]
            measures[i] = metrics.build(spec.metric, model.vocab, case.answer, case.foil, logits)
            clean_values[i] = float(measures[i](logits[None])[0])
        for group in by_length(tokens):
            rows = [(i, j) for i in group for j in range(len(sets))]
            size = model.rows_per_pass(tokens[group[0]].length, len(rows), 64)
            for lo in range(0, len(rows), size):
                chunk = rows[lo:lo + size]
                edits = [_latent_edit(sae, spec.cases[i], spec.skip, tokens[i], found[i],
                                      sets[j], target, r) for r, (i, j) in enumerate(chunk)]
                run = model.forward(Tokens.stack([tokens[i] for i, _ in chunk]), edits=edits,
                                    logits_to_keep=1)
                for r, (i, j) in enumerate(chunk):
                    values[i, j] = float(measures[i](run.logits[r:r + 1, -1])[0])
    names = [tuple(f"latent {i}" for i in s) for s in sets]
    return [AblationResult(
        model=model.info.name, prompt=case.prompt, answer=case.answer, foil=case.foil,
        parts=names[0], method=spec.method, mode="necessity", clean=float(clean_values[i]),
        ablated=float(values[i, 0]), controls=tuple(float(v) for v in values[i, 1:]),
        control_sets=tuple(names[1:]), metric=metrics.label(spec.metric),
    ) for i, case in enumerate(spec.cases)]


def _random_latent_sets(pool: list[int], size: int, n: int, seed: int) -> list[list[int]]:
    """``n`` seeded random sets of ``size`` latents from ``pool``."""
    if n and len(pool) < size:
        raise InterpError(f"control={n} draws random sets of {size} latents from those active "
                          f"on the prompts, but only {len(pool)} others are: name fewer latents "
                          "or give more prompts")
    rng = np.random.default_rng(seed)
    return [sorted(int(pool[k]) for k in rng.choice(len(pool), size, replace=False))
            for _ in range(n)]


def _latent_targets(model: Runner, sae: Dictionary, spec: LatentAblation,
                    found: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                    ) -> torch.Tensor:
    """What each latent is set to: zero, or its mean activation over the reference prompts'
    positions from ``skip`` on [n_latents]."""
    target = torch.zeros(sae.n_latents, device=model.info.device)
    if spec.method != "mean":
        return target
    if spec.reference is None:
        acts = [latents[spec.skip:] for latents, _, _ in found.values()]
    else:
        acts = [sae.encode(batch_acts[row, spec.skip:].float())
                for _, batch, batch_acts in site_batches(model, spec.reference, sae)
                for row in range(batch.batch)]
    return torch.cat(acts).mean(0)


def _latent_edit(sae: Dictionary, case: Case, skip: int, tokens: Tokens,
                 clean: tuple[torch.Tensor, torch.Tensor, torch.Tensor], chosen: list[int],
                 target: torch.Tensor, row: int) -> Edit:
    """One row's edit: the decoder's change with ``chosen`` latents set to ``target``, added
    at the case's positions (default: every one from ``skip`` on)."""
    latents, x, _ = clean
    given = case_positions(tokens, case)
    positions = list(given) if given is not None else list(range(skip, tokens.length))
    changed = latents.clone()
    changed[:, chosen] = target[chosen]
    delta = (sae.decode(changed, x) - sae.decode(latents, x))[positions]
    return Edit(sae.out_site, delta, mode="add", positions=tuple(positions), rows=(row,))

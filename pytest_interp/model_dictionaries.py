"""model layer: the sparse-dictionary probes of the ``interp_model`` facade (SAEs and
transcoders): each loads its dictionary once per model, builds its spec, and memoises."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import checks
from .dictionaries import LATENT_VECTOR
from .errors import InterpError

if TYPE_CHECKING:
    from torch import Tensor

    from .dictionaries.dictionary import Dictionary
    from .probes.features import Fidelity, LatentAblation
    from .probes.runner import Runner
    from .results import AblationResult
    from .results.features import FeatureAttributionResult, FeaturesResult, FidelityResult

    class Facade(Runner, Protocol):
        """What the mixin needs of ``InterpModel`` (without importing it)."""

        root: Path | None
        dictionaries: dict[tuple[str, str | None], Dictionary]

        def remember(self, key: Hashable | None, compute: Callable[[Any], Any]) -> Any: ...


class DictionaryProbes:
    """``interp_model.features``, ``sae_fidelity``, ``feature_attribution`` and
    ``dictionary`` (mixed into ``InterpModel``)."""

    @property
    def _model(self) -> Facade:
        return cast("Facade", self)

    def dictionary(self, sae: str, *, labels: str | None = None) -> Dictionary:
        """The sparse dictionary ``sae`` names (a SAELens, Gemma Scope or sparsify folder or
        file, or a hub path ``org/repo/folder@revision``), checked against this model and
        loaded once; ``labels``: a JSON file ``{"4512": "description"}`` of latent labels."""
        checks.text("sae", sae)
        key = (sae, labels)
        found = self._model.dictionaries.get(key)
        if found is None:
            from .dictionaries.formats import load_dictionary, read_labels

            found = load_dictionary(sae, self._model.root)
            if labels is not None:
                found = replace(found, labels=read_labels(Path(labels), sae))
            found = found.fitted(self._model.info).to(self._model.info.device)
            self._model.dictionaries[key] = found
        return found

    def latent_vector(self, spec: str) -> Tensor:
        """The decoder direction [d_model] of the latent ``sae:PATH#LATENT`` names: a steering
        vector (coef = the activation it adds; add it at the dictionary's output site)."""
        sae, hash_, latent = spec.removeprefix(LATENT_VECTOR).rpartition("#")
        if not hash_ or not sae or not latent.isdigit():
            raise InterpError(f"a latent's vector is sae:PATH#LATENT (e.g. "
                              f"sae:sae/resid_post_15#4512), got {spec!r}")
        dictionary = self.dictionary(sae)
        return dictionary.direction(dictionary.check_latent(int(latent)))

    def features(self, prompt: str, *, sae: str,
                 labels: str | None = None) -> FeaturesResult:
        """The active latents of ``sae`` at every position of ``prompt``: ``.top(position,
        k)``, ``.activation(latent, position)``, ``.dense()`` [positions, n_latents], each
        latent's label. Memoised."""
        from .probes.features import Features

        checks.one_prompt("features", prompt)
        spec = checks.build(Features, "features", {"prompt": prompt, "sae": sae,
                                                   "labels": labels})
        return self._model.remember(spec, lambda m: m.features_of([prompt], sae, labels)[0])

    def features_of(self, prompts: Sequence[str], sae: str, labels: str | None = None,
                    asked: Sequence[int] = ()) -> list[FeaturesResult]:
        """``features`` of many prompts, one forward per token length (``asked`` latents
        labelled too). Not memoised."""
        from .probes.features import features

        return features(self._model, self.dictionary(sae, labels=labels), prompts, asked)

    def sae_fidelity(self, texts: str | Sequence[str], *, sae: str,
                     skip: int = 1) -> FidelityResult:
        """How well ``sae`` stands in for its site over ``texts``: FVU, L0, and the loss with
        the reconstruction spliced in (``delta_ce``, ``kl``) and with the error term kept
        (``error_term_change``, 0), past the first ``skip`` positions. Memoised."""
        from .probes.features import Fidelity
        from .results.features import FidelityResult

        texts = (texts,) if isinstance(texts, str) else tuple(texts)
        spec = checks.build(Fidelity, "sae_fidelity", {"texts": texts, "sae": sae,
                                                       "skip": skip})
        parts = self._model.remember(spec, lambda m: m.fidelity_of(spec))
        return FidelityResult.pooled(parts)

    def fidelity_of(self, spec: Fidelity) -> list[FidelityResult]:
        """``sae_fidelity`` per text (``probes.features.Fidelity``), batched. Not memoised."""
        from .probes.features import fidelity

        return fidelity(self._model, self.dictionary(spec.sae), spec)

    def latent_ablation_rows(self, spec: LatentAblation) -> list[AblationResult]:
        """The ablation kind with ``sae=``: ``spec``'s results, one per case, batched
        (``probes.features.LatentAblation``). Memoised; each row's origin is noted."""
        from .probes.features import latent_ablation
        from .record import remember_origin

        rows: list[AblationResult] = self._model.remember(
            spec, lambda m: latent_ablation(m, m.dictionary(spec.sae), spec))
        for i, result in enumerate(rows):
            remember_origin(result, self._model, _latent_row(spec, i))
        return rows

    def feature_attribution(self, prompt: str, *, sae: str,
                            **options: Any) -> FeatureAttributionResult:
        """Each active latent's activation x gradient of a metric at the last position, at
        every position, and the error term's (``probes.features.FeatureAttribution`` names
        every option: answer, foil, metric, verify_top_k, labels). Memoised."""
        from .probes.features import FeatureAttribution, feature_attribution

        checks.one_prompt("feature_attribution", prompt)
        spec = checks.build(FeatureAttribution, "feature_attribution",
                            {"prompt": prompt, "sae": sae, **options})
        return self._model.remember(spec, lambda m: feature_attribution(
            m, m.dictionary(sae, labels=spec.labels), spec))


def _latent_row(spec: LatentAblation, i: int) -> Callable[[Any], AblationResult]:
    """The recipe of row ``i`` of a latent ablation (a variant computes the batch once)."""
    return lambda model: model.latent_ablation_rows(spec)[i]

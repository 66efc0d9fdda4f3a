"""expect layer: noise floors, measured when a snapshot is written: the probe re-run on benign
variants of its model (the other backend, weights rounded through bfloat16, seeded relative noise),
k x the largest deviation of each value kept."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from ..codec import (
    Tolerances,
    measure_floors,
)
from ..record import ORIGINS, recording
from .stored import Floors, codec_for


class Calibrator:
    """Measures a result's noise floor: re-runs the probe that computed it on benign variants
    of its model (the other backend, weights rounded through bfloat16, seeded relative weight
    noise) and keeps k x the largest deviation of each value (``codec.measure_floors``)."""

    def __init__(self, pool: Any, perturbations: tuple[str, ...], k: float,
                 tolerances: Tolerances) -> None:
        self.pool, self.perturbations, self.k, self.tolerances = pool, perturbations, k, \
            tolerances
        self._done: weakref.WeakKeyDictionary[Any, Floors] = weakref.WeakKeyDictionary()

    def floors(self, result: Any) -> Floors | None:
        """The floors of ``result`` (None: no recipe to re-run, e.g. a hand-built result)."""
        if result in self._done:
            return self._done[result]
        origin, codec = ORIGINS.get(result), codec_for(result)
        if origin is None or codec is None:
            return None
        model, recipe = origin
        base = model.request
        if base is None or base.remote:  # variants of a remote model would run remotely too
            return None
        variants = []
        with recording():  # the variants' results are not this test's figures
            for perturbation in self.perturbations:
                request = base
                if perturbation == "backend":
                    request = dataclasses.replace(
                        request, backend="nnsight" if request.backend == "transformer_lens"
                        else "transformer_lens")
                else:
                    request = dataclasses.replace(request, perturbation=perturbation)
                variants.append(codec.summarize(recipe(self.pool.get(request))))
        floors = measure_floors(codec, codec.summarize(result), variants, self.tolerances,
                                self.k)
        self._done[result] = floors
        return floors

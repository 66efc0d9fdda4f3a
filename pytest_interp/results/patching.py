"""results layer: activation patching grids and logit differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks, metrics
from ..errors import InterpError
from .tokens import short_token, token_position


@dataclass(frozen=True)
class LogitDiffResult:
    """logit(answer) - logit(foil) at the last position of a prompt, with the model's own
    next-token top-5 there (token, probability)."""

    model: str
    prompt: str
    answer: str
    foil: str
    value: float
    top: tuple[tuple[str, float], ...]

@dataclass(frozen=True, eq=False)
class PatchingResult:
    """Activation patching: the metric when one clean activation is written into the corrupted run.

    ``patched`` holds the metric (``metric``: by default the logit diff answer - foil at the
    last position) per patch: [layers, positions] for residual/attn_out/mlp_out sites,
    [layers, heads] for head_out patched at every position, [layers, heads, positions] for
    head_out patched position by position. ``clean_logit_diff``/``corrupted_logit_diff`` hold
    the metric of the clean and corrupted runs (named for the default).
    """

    model: str
    site: str
    clean: str
    corrupted: str
    answer: str | None
    foil: str | None
    clean_tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    clean_logit_diff: float
    corrupted_logit_diff: float
    patched: np.ndarray
    heads: bool = False  # True for head_out sweeps (a heads axis after layers)
    per_position: bool = True  # False for head_out patched at every position at once
    metric: str = "logit diff"  # what patched, clean_logit_diff... measure (metrics.label)
    method: str = "exact"  # or "attribution": ``patched`` is a first-order estimate
    exact: np.ndarray | None = None  # attribution: exact patched metric of verified cells

    @property
    def n_layers(self) -> int:
        return int(self.patched.shape[0])

    @property
    def estimate(self) -> bool:
        """Whether ``patched`` is estimated (attribution patching) rather than measured."""
        return self.method != "exact"

    @property
    def estimate_errors(self) -> np.ndarray:
        """Estimated minus exact recovery at each verified cell (``verify_top_k``)."""
        if self.exact is None:
            return np.zeros(0)
        done = ~np.isnan(self.exact)
        exact = (self.exact - self.corrupted_logit_diff) / (
            self.clean_logit_diff - self.corrupted_logit_diff)
        return (self.recovery - exact)[done]

    @property
    def how(self) -> str:
        """How ``patched`` was found, as shown in titles: "" or "attribution estimate, ..."."""
        if not self.estimate:
            return ""
        errors = self.estimate_errors
        if not errors.size:
            return f"{self.method} estimate, not verified"
        return (f"{self.method} estimate; its {errors.size} largest cells patched exactly: "
                f"max |error| {np.abs(errors).max():.2f} recovery")

    @property
    def effect(self) -> float:
        """clean - corrupted: what recovery divides by (the behaviour the pair shows)."""
        return float(self.clean_logit_diff - self.corrupted_logit_diff)

    @property
    def recovery(self) -> np.ndarray:
        """(patched - corrupted) / (clean - corrupted): 1 = fully restores clean, 0 = no effect."""
        gap = self.clean_logit_diff - self.corrupted_logit_diff
        if gap == 0:
            raise InterpError(
                f"clean and corrupted {self.metric}s are equal ({self.clean_logit_diff:.4f}): "
                "recovery is undefined; pick prompts on which the model behaves differently"
            )
        return (self.patched - self.corrupted_logit_diff) / gap

    @property
    def measured(self) -> str:
        """What the metric reads, e.g. ``logit diff ' Mary' - ' John'``."""
        return metrics.describe(self.metric, self.answer, self.foil)

    def position_index(self, position: int | str) -> int:
        """An int position, or a token string's last occurrence in the clean prompt."""
        return token_position(self.clean_tokens, position, self.clean)

    def layer_index(self, layer: int) -> int:
        """A block index (negative from the end) as 0..n_layers-1."""
        return checks.index(layer, self.n_layers, what="layer", owner=self.model, unit="layers")

    def grid_2d(self, head: int | None = None) -> tuple[np.ndarray, list[str], str]:
        """The 2-D recovery grid shown in failures: values, column labels, column axis name."""
        rec = self.recovery
        if not self.heads:
            return rec, [short_token(t, 6) for t in self.clean_tokens], "position"
        if not self.per_position:
            return rec, [f"H{h}" for h in range(rec.shape[1])], "head"
        labels = [short_token(t, 6) for t in self.clean_tokens]
        if head is None:
            return rec.max(axis=1), labels, "position (max head)"
        return rec[:, head], labels, f"position (head {head})"

    def grid(self, mark: tuple[int, int] | None = None, head: int | None = None) -> str:
        """Recovery as a text heatmap, layers down, columns across; ``mark`` = (layer, column)."""
        values, labels, axis = self.grid_2d(head)
        how = f" [{self.how}]" if self.how else ""
        lines = [
            f"{self.site} patching recovery{how} (clean {self.clean_logit_diff:+.3f}, corrupted "
            f"{self.corrupted_logit_diff:+.3f}: {self.measured} at the last position); rows "
            f"layer, columns {axis}",
            "        " + "".join(f"{label:>7}" for label in labels),
        ]
        for layer in range(values.shape[0]):
            cells = []
            for col in range(values.shape[1]):
                value = values[layer, col]
                text = "·" if np.isnan(value) else f"{value:.2f}"
                if mark == (layer, col):
                    text = f"[{text}]"
                cells.append(f"{text:>7}")
            flag = ">" if mark and mark[0] == layer else " "
            lines.append(f"{flag} {layer:>5} " + "".join(cells))
        return "\n".join(lines)

"""backends layer: the Backend protocol: what every adapter offers, in model terms (no hook names),
and the edit semantics both adapters share.

Sites and their shapes are in ``pytest_interp.sites``; logits are [B, P, V].
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

# Functions, not the module: remote (NDIF) traces pickle this module's code by value, and a
# module object referenced from it would be pickled whole.
from ..checks import index as check_index
from ..checks import position as check_position
from ..errors import InterpError, SiteError
from ..sites import COMPONENTS, HEAD_INPUTS, INPUT_SITES, Component, Site, all_sites
from .splice import Splice

__all__ = ["COMPONENTS", "Backend", "Component", "Edit", "ModelInfo", "Run", "Site", "Start",
           "Tokens", "all_sites"]


@dataclass(frozen=True)
class Tokens:
    """A batch of token-id rows of equal length (no padding), with their token strings."""

    ids: tuple[tuple[int, ...], ...]
    strs: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.ids:
            raise InterpError("an empty batch has no tokens: pass at least one prompt")
        lengths = {len(row) for row in self.ids}
        if len(lengths) != 1:
            raise InterpError(
                f"batch rows have different lengths {sorted(lengths)}: batch only prompts "
                "that tokenize to the same number of tokens"
            )
        if 0 in lengths:
            raise InterpError("a prompt tokenized to no tokens: pass a non-empty prompt")

    @property
    def batch(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        return len(self.ids[0])

    def tensor(self, device: torch.device | str = "cpu") -> Tensor:
        """The ids as a [B, P] long tensor."""
        return torch.tensor(self.ids, dtype=torch.long, device=device)

    def row(self, index: int) -> Tokens:
        return Tokens((self.ids[index],), (self.strs[index],))

    @staticmethod
    def stack(rows: Sequence[Tokens]) -> Tokens:
        """Concatenate batches row-wise."""
        return Tokens(
            tuple(r for t in rows for r in t.ids), tuple(s for t in rows for s in t.strs)
        )

    def repeat(self, n: int) -> Tokens:
        return Tokens(self.ids * n, self.strs * n)

    def slice(self, start: int, stop: int | None = None) -> Tokens:
        """Positions ``start:stop`` of every row."""
        cut = slice(start, stop)
        return Tokens(tuple(r[cut] for r in self.ids), tuple(s[cut] for s in self.strs))


@dataclass(frozen=True, eq=False)
class Edit:
    """Replace or add ``value`` at ``site`` for chosen batch rows, positions and head.

    ``value`` broadcasts to the edited slice: [len(rows), len(positions), D] for residual
    sites and for one head of head_out or of q/k/v_input (``head`` set); a q/k/v_input edit
    without ``head`` broadcasts to [len(rows), len(positions), n, D], every head at once.
    ``rows``/``positions`` None = all;
    negative positions count from the end of the sequence.
    """

    site: Site
    value: Tensor
    mode: Literal["replace", "add"] = "replace"
    positions: tuple[int, ...] | None = None
    rows: tuple[int, ...] | None = None
    head: int | None = None
    _key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("replace", "add"):
            raise InterpError(f"edit mode {self.mode!r} is not 'replace' or 'add'")
        if self.site.component == "attn_pattern":
            raise SiteError(
                "attn_pattern is read-only: edit head_out or attn_out to change what a head writes"
            )
        if self.site.component == "head_out" and self.head is None:
            raise SiteError("a head_out edit needs head=H (which head to edit)")
        if self.site.component not in ("head_out", *HEAD_INPUTS) and self.head is not None:
            raise SiteError(f"head={self.head} only applies to head_out, q_input, k_input and "
                            f"v_input edits, not {self.site}")
        if not isinstance(self.value, Tensor):
            raise InterpError(f"edit value must be a torch.Tensor, got {type(self.value).__name__}")
        for name in ("positions", "rows"):
            got = getattr(self, name)
            if got is not None:
                object.__setattr__(self, name, tuple(int(i) for i in got))
        value = self.value if self.value.requires_grad else self.value.detach()
        object.__setattr__(self, "value", value)  # one that requires grad keeps its graph

    @property
    def key(self) -> str:
        """A content hash: two edits with equal keys change a run identically (made when
        first asked: runs that are not memoised never hash their edits)."""
        if not self._key:
            digest = hashlib.sha1(
                self.value.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
            digest.update(repr((self.site, self.mode, self.positions, self.rows, self.head,
                                tuple(self.value.shape), str(self.value.dtype))).encode())
            object.__setattr__(self, "_key", digest.hexdigest())
        return self._key


@dataclass(frozen=True, eq=False)
class Start:
    """Begin a forward pass at block ``layer`` with ``resid`` [B, P, D] as its resid_pre.

    Blocks below ``layer`` are not run: use it for rows that equal a known run up to there
    (activation patching at layer L reuses the corrupted run below L).
    """

    layer: int
    resid: Tensor


def start_edits(
    info: ModelInfo, tokens: Tokens, start: Start | None, read: Collection[Site],
    edits: Sequence[Edit],
) -> list[Edit]:
    """Check a Start against the run and turn it into the resid_pre edit that installs it."""
    if start is None:
        return list(edits)
    info.check_layer(start.layer, "start layer")
    expected = (tokens.batch, tokens.length, info.d_model)
    if tuple(start.resid.shape) != expected:
        raise InterpError(
            f"start residual has shape {tuple(start.resid.shape)}, expected {list(expected)} "
            "[batch, positions, d_model]"
        )
    below = [str(s) for s in [*read, *(e.site for e in edits)] if s.layer < start.layer]
    if below:
        raise SiteError(
            f"{', '.join(below)} lie below the start layer {start.layer}, which is not run"
        )
    return [Edit(Site(start.layer, "resid_pre"), start.resid), *edits]


def split_splice(edits: Sequence[Edit | Splice]) -> tuple[list[Edit], Splice | None]:
    """The edits without their splice, and the splice (at most one)."""
    splices = [e for e in edits if isinstance(e, Splice)]
    if len(splices) > 1:
        raise InterpError("a run takes at most one splice: merge their cuts into one")
    plain = [e for e in edits if isinstance(e, Edit)]
    return plain, (splices[0] if splices else None)


def edits_key(edits: Sequence[Edit]) -> tuple[str, ...]:
    return tuple(e.key for e in edits)


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, for headers, snapshots and validation."""

    name: str
    revision: str
    architecture: str
    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int
    n_ctx: int
    dtype: str
    device: str
    backend: str
    family: str = ""
    parallel: bool = False  # attention and MLP both read resid_pre: no resid_mid
    logit_softcap: float | None = None  # final logits are cap * tanh(logits / cap)
    n_kv_heads: int = 0  # key/value heads (grouped-query attention); 0 = n_heads
    post_norm: bool = False  # a norm follows attention: heads do not write separately
    mlp_norm_eps: float | None = None  # the epsilon of the norm before the MLP (None: no norm)
    mlp_norm_centred: bool = False  # that norm is a LayerNorm (centres), not an RMSNorm

    def __post_init__(self) -> None:
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    def heads_of(self, component: str) -> int:
        """How many heads an input site has: n_heads for q_input, n_kv_heads for k/v."""
        return self.n_heads if component == "q_input" else self.n_kv_heads

    @property
    def components(self) -> tuple[Component, ...]:
        """The sites a cache reads (parallel blocks have no resid_mid; the per-node input
        copies of the residual stream are read only when named)."""
        return tuple(c for c in COMPONENTS if not (self.parallel and c == "resid_mid")
                     and c not in INPUT_SITES)

    def check_layer(self, layer: int, what: str = "layer") -> int:
        """A (possibly negative) block index as 0..n_layers-1, or one line naming the range."""
        return check_index(layer, self.n_layers, what=what, owner=self.name, unit="layers")

    def check_head(self, head: int) -> int:
        """A (possibly negative) head index as 0..n_heads-1, or one line naming the range."""
        return check_index(head, self.n_heads, what="head", owner=self.name, unit="heads")


@dataclass(frozen=True)
class Run:
    """The outcome of one batched forward pass: logits and the activations that were read."""

    tokens: Tokens
    logits: Tensor
    acts: Mapping[Site, Tensor]
    past: object = None  # the key/value cache after this run, when asked for (keep_past)

    def nbytes(self) -> int:
        return self.logits.nbytes + sum(t.nbytes for t in self.acts.values())


@runtime_checkable
class Backend(Protocol):
    """What a probe may ask of a model. Adapters implement it; probes use nothing else."""

    info: ModelInfo

    def tokenize(self, text: str) -> Tokens: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    @property
    def special_ids(self) -> frozenset[int]:
        """The tokenizer's special token ids (BOS, EOS, padding, ...)."""
        ...

    def vocabulary(self) -> dict[str, int]:
        """Token string -> id, as the tokenizer defines it."""
        ...

    def run(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit | Splice] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        """One batched forward. ``logits_to_keep=k`` computes logits for the last k
        positions only (0 = all), as Hugging Face's argument of that name. ``past`` (the
        ``Run.past`` of an earlier run, which this run extends in place) makes ``tokens`` the
        continuation of that run: positions and edit positions then count within ``tokens``.
        ``keep_past`` returns the key/value cache as ``Run.past``. ``grad`` runs with autograd
        (not in inference mode): the logits keep their graph back to edit values that
        require grad. A ``Splice`` among the edits cuts edges: chosen readers see chosen
        writers as another run had them (``backends.splice``)."""
        ...

    def unembed(self, hidden: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------
# Helpers shared by the adapters, so edit semantics are written once.


def check_sites(info: ModelInfo, sites: Collection[Site]) -> None:
    for site in sites:
        if info.parallel and site.component == "resid_mid":
            raise SiteError(
                f"{info.name} ({info.family}) has parallel blocks: attention and the MLP both "
                "read resid_pre, so there is no resid_mid to read or edit; use resid_pre, "
                "attn_out or mlp_out"
            )
        if not 0 <= site.layer < info.n_layers:
            raise SiteError(
                f"site {site} is out of range for {info.name} with {info.n_layers} layers: "
                f"use layers 0..{info.n_layers - 1}"
            )


def check_edits(info: ModelInfo, tokens: Tokens, edits: Sequence[Edit]) -> None:
    check_sites(info, [e.site for e in edits])
    for edit in edits:
        if edit.head is not None and edit.site.component in HEAD_INPUTS:
            check_index(edit.head, info.heads_of(edit.site.component), what="head",
                        owner=info.name,
                        unit="heads" if edit.site.component == "q_input" else "key/value heads")
        elif edit.head is not None:
            info.check_head(edit.head)
        for pos in edit.positions or ():
            check_position(pos, tokens.length, what="edit position")
        for row in edit.rows or ():
            if not 0 <= row < tokens.batch:
                raise SiteError(
                    f"edit row {row} is outside the batch of {tokens.batch}: "
                    f"use 0..{tokens.batch - 1}"
                )


def _index(edit: Edit, batch: int, length: int,
           device: torch.device) -> tuple[Tensor | slice, Tensor | slice]:
    """Where an edit lands: slices when it takes every row and a run of positions (cheap to
    write and to differentiate through), else index tensors [rows, 1] and [1, positions]."""
    positions = range(length) if edit.positions is None else [p % length for p in edit.positions]
    if edit.rows is None and list(positions) == list(range(positions[0], positions[-1] + 1)):
        return slice(None), slice(positions[0], positions[-1] + 1)
    rows = range(batch) if edit.rows is None else edit.rows
    r = torch.tensor(list(rows), dtype=torch.long, device=device)
    p = torch.tensor(list(positions), dtype=torch.long, device=device)
    return r[:, None], p[None, :]


def apply_edits(x: Tensor, edits: Iterable[Edit], *, per_head: bool = False) -> Tensor:
    """Return ``x`` ([B, P, D], or [B, P, H, D] when ``per_head``) with the edits applied.

    The input is not modified; a new tensor is returned only when there is an edit.
    """
    edits = list(edits)
    if not edits:
        return x
    out = x.clone()
    batch, length = x.shape[0], x.shape[1]
    for edit in edits:
        r, p = _index(edit, batch, length, x.device)
        where = (r, p, edit.head) if per_head else (r, p)
        target = out[where]
        value = edit.value.to(device=x.device, dtype=x.dtype)
        try:
            new = value.expand_as(target) if edit.mode == "replace" else target + value
        except RuntimeError:
            raise InterpError(
                f"edit value of shape {tuple(value.shape)} does not fit {edit.site}: "
                f"it must broadcast to [rows, positions, d_model] = {list(target.shape)}"
            ) from None
        out[where] = new
    return out


def resid_mid_as_attn_out(
    attn_out: Tensor, resid_pre: Tensor, edits: Iterable[Edit]
) -> Tensor:
    """Apply resid_mid edits by changing attn_out (resid_mid = resid_pre + attn_out)."""
    edits = list(edits)
    if not edits:
        return attn_out
    mid = resid_pre + attn_out
    return attn_out + (apply_edits(mid, edits) - mid)  # exactly attn_out where unedited


def check_past(start: Start | None, past: object) -> int:
    """The number of positions ``past`` holds (0 for none).

    A run may both extend ``past`` and start at a later block: the blocks it skips then add
    nothing to the cache, so such a cache must not be extended again."""
    if past is None:
        return 0
    return int(past.get_seq_length())  # type: ignore[attr-defined]

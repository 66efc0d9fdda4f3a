"""results layer: frozen result dataclasses (tokens, numbers, small numpy arrays; no tensors), one
module per probe. Expectations and snapshots read these, so they can be unit-tested with hand-built
results."""

from ..vocab import Vocab
from .ablation import AblationResult, beaten
from .attention import ATTENTION_KINDS, AttentionResult, attention_labels
from .generation import GenerationResult
from .lens import LensResult
from .patching import LogitDiffResult, PatchingResult
from .patchscope import PatchscopeResult
from .steering import SteeringResult
from .tokens import TokenSpec, find_token, token_position

__all__ = ["ATTENTION_KINDS", "AblationResult", "AttentionResult", "GenerationResult",
           "LensResult", "LogitDiffResult", "PatchingResult", "PatchscopeResult",
           "SteeringResult", "TokenSpec", "Vocab", "attention_labels", "beaten", "find_token",
           "token_position"]

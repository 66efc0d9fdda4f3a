"""backends layer: the model families pytest-interp supports: the one table of what differs between
them.

Each family names its Hugging Face architecture classes, the GGUF ``general.architecture``
values transformers reads as it, where its blocks keep their parts (for the nnsight adapter
and the raw-HF reference in the tests), and how a block is wired. TransformerLens's bridge
names every part itself; nothing here is a TransformerLens hook name. No torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ModelSpecError


@dataclass(frozen=True)
class Layout:
    """Where a family's decoder blocks keep their parts (paths of HF module attributes).

    ``attn_out`` and ``mlp_out`` name the module whose output is what attention and the MLP
    add to the residual stream: the attention module itself, or the norm after it (Gemma 2/3,
    OLMo-2 normalise each sublayer's output before adding it). ``mid`` names the module whose
    input is resid_mid (None for parallel blocks, where nothing reads it).
    """

    blocks: str  # from the root module: the ModuleList of blocks
    attn: str  # in a block: the attention module (its output[1] is the pattern)
    o_proj: str  # in the attention module: its input is the heads' mixed values z
    attn_out: str  # in a block: the module whose output is added to the residual stream
    mlp_out: str  # in a block: the module whose output is added to the residual stream
    mid: str | None  # in a block: the module whose input is resid_mid
    final_norm: str  # from the root module
    o_proj_in_out: bool = False  # weight stored [in, out] (HF Conv1D) rather than [out, in]
    mlp: str = "mlp"  # in a block: the MLP module (its input is mlp_in, after the norm)
    attn_norm: str | None = "input_layernorm"  # in a block: the norm before attention
    mlp_norm: str | None = "post_attention_layernorm"  # in a block: the norm before the MLP
    qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")  # in the attention module
    qkv_fused: str = ""  # one projection: "concat" ([q | k | v]) or "per_head" ([H, 3, Dh])
    qkv_in_out: bool = False  # the q/k/v weight is stored [in, out] (HF Conv1D)

    @property
    def post_norm(self) -> bool:
        """A norm follows attention, so its heads do not write to the residual separately."""
        return self.attn_out != self.attn


@dataclass(frozen=True)
class Family:
    """One supported family of decoder-only causal LMs."""

    name: str  # as the README table names it
    key: str  # the tiny-random-<key> alias
    architectures: tuple[str, ...]  # Hugging Face architecture class names
    gguf: tuple[str, ...]  # GGUF general.architecture values transformers loads as it
    layout: Layout
    parallel: bool = False  # attention and MLP both read resid_pre (GPT-NeoX, Pythia)
    rms_norm: bool = True  # its norms are RMSNorms; else LayerNorms (they centre first)


_LLAMA_LAYOUT = Layout("model.layers", "self_attn", "o_proj", "self_attn", "mlp",
                       "post_attention_layernorm", "model.norm")
_POST_NORM_LAYOUT = Layout("model.layers", "self_attn", "o_proj", "post_attention_layernorm",
                           "post_feedforward_layernorm", "pre_feedforward_layernorm",
                           "model.norm", mlp_norm="pre_feedforward_layernorm")

FAMILIES: tuple[Family, ...] = (
    Family("Llama", "llama", ("LlamaForCausalLM",), ("llama",), _LLAMA_LAYOUT),
    Family("GPT-2", "gpt2", ("GPT2LMHeadModel",), ("gpt2",),
           Layout("transformer.h", "attn", "c_proj", "attn", "mlp", "ln_2", "transformer.ln_f",
                  o_proj_in_out=True, attn_norm="ln_1", mlp_norm="ln_2", qkv=("c_attn",),
                  qkv_fused="concat", qkv_in_out=True), rms_norm=False),
    Family("Mistral", "mistral", ("MistralForCausalLM",), ("mistral",), _LLAMA_LAYOUT),
    Family("Qwen2", "qwen2", ("Qwen2ForCausalLM",), ("qwen2",), _LLAMA_LAYOUT),
    Family("Qwen3", "qwen3", ("Qwen3ForCausalLM",), ("qwen3",), _LLAMA_LAYOUT),
    Family("Gemma 2", "gemma2", ("Gemma2ForCausalLM",), ("gemma2",), _POST_NORM_LAYOUT),
    Family("Gemma 3", "gemma3", ("Gemma3ForCausalLM",), ("gemma3",), _POST_NORM_LAYOUT),
    Family("GPT-NeoX / Pythia", "gpt-neox", ("GPTNeoXForCausalLM",), (),
           Layout("gpt_neox.layers", "attention", "dense", "attention", "mlp", None,
                  "gpt_neox.final_layer_norm", qkv=("query_key_value",), qkv_fused="per_head"),
           parallel=True, rms_norm=False),
    Family("OLMo", "olmo", ("OlmoForCausalLM",), (), _LLAMA_LAYOUT, rms_norm=False),
    Family("OLMo-2", "olmo2", ("Olmo2ForCausalLM",), (),
           Layout("model.layers", "self_attn", "o_proj", "post_attention_layernorm",
                  "post_feedforward_layernorm", "mlp", "model.norm", attn_norm=None,
                  mlp_norm=None)),
    Family("Phi-3", "phi3", ("Phi3ForCausalLM",), ("phi3",),
           dataclasses.replace(_LLAMA_LAYOUT, qkv=("qkv_proj",), qkv_fused="concat")),
)

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(a for f in FAMILIES for a in f.architectures)


def family_of(architecture: str) -> Family:
    """The family of an HF architecture class name, or one line listing what is supported."""
    for family in FAMILIES:
        if architecture in family.architectures:
            return family
    raise ModelSpecError(unsupported(architecture))


def gguf_family(gguf_architecture: str) -> Family:
    """The family of a GGUF file's ``general.architecture``, or one line listing them."""
    for family in FAMILIES:
        if gguf_architecture in family.gguf:
            return family
    readable = ", ".join(g for f in FAMILIES for g in f.gguf)
    raise ModelSpecError(f"GGUF architecture {gguf_architecture!r} is not supported: use a "
                         f"GGUF file of {readable}")


def unsupported(architecture: str) -> str:
    return (f"architecture {architecture or 'unknown'} is not supported: use a model of "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}")

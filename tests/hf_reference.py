"""An independent reference: raw Hugging Face forward hooks, no pytest-interp internals
but the table of where each family keeps its modules (which the TransformerLens adapter,
with TransformerLens's own names, cross-checks in the contract test).

Reads every site of every layer, optionally with one replace edit (at a block's input) and
one add edit (at an MLP's output), written the plain PyTorch way.
"""

from __future__ import annotations

import torch
from torch import nn

from pytest_interp.backends.architectures import family_of


def _parts(model: nn.Module):
    return family_of(model.config.architectures[0]).layout


def _get(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


@torch.inference_mode()
def hf_run(model: nn.Module, ids: torch.Tensor, *, replace_resid_pre=None, add_mlp_out=None):
    """Run ``model`` on ``ids`` and return (logits, {(layer, component): tensor}).

    ``replace_resid_pre=(layer, pos, vector)`` replaces the block input at one position;
    ``add_mlp_out=(layer, pos, vector)`` adds to the MLP output at one position.
    """
    layout = _parts(model)
    blocks = _get(model, layout.blocks)
    n_heads = model.config.num_attention_heads
    acts: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    in_out = layout.o_proj_in_out

    for layer, block in enumerate(blocks):
        attn, mlp = _get(block, layout.attn), _get(block, layout.mlp_out)
        o_proj, attn_out = _get(attn, layout.o_proj), _get(block, layout.attn_out)

        def block_pre(module, args, kwargs, layer=layer):
            hidden = args[0] if args else kwargs["hidden_states"]
            if replace_resid_pre is not None and replace_resid_pre[0] == layer:
                hidden = hidden.clone()
                hidden[:, replace_resid_pre[1]] = replace_resid_pre[2]
            acts[layer, "resid_pre"] = hidden.clone()
            if args:
                return (hidden, *args[1:]), kwargs
            kwargs["hidden_states"] = hidden
            return args, kwargs

        def o_pre(module, args, layer=layer, o_proj=o_proj):
            z = args[0]
            w = o_proj.weight if in_out else o_proj.weight.T  # [H*Dh, D]
            z4 = z.reshape(*z.shape[:2], n_heads, -1)
            w3 = w.reshape(n_heads, -1, w.shape[-1])
            acts[layer, "head_out"] = torch.stack(
                [z4[:, :, h] @ w3[h] for h in range(n_heads)], dim=2
            )

        def attn_post(module, args, output, layer=layer):
            acts[layer, "attn_pattern"] = output[1].clone()

        def attn_out_post(module, args, output, layer=layer):
            out = output[0] if isinstance(output, tuple) else output
            acts[layer, "attn_out"] = out.clone()

        def mid_pre(module, args, kwargs, layer=layer):
            hidden = args[0] if args else next(iter(kwargs.values()))
            acts[layer, "resid_mid"] = hidden.clone()

        def mlp_pre(module, args, kwargs, layer=layer):
            hidden = args[0] if args else next(iter(kwargs.values()))
            acts[layer, "mlp_in"] = hidden.clone()

        def mlp_post(module, args, output, layer=layer):
            if add_mlp_out is not None and add_mlp_out[0] == layer:
                output = output.clone()
                output[:, add_mlp_out[1]] += add_mlp_out[2]
            acts[layer, "mlp_out"] = output.clone()
            return output

        def block_post(module, args, output, layer=layer):
            hidden = output[0] if isinstance(output, tuple) else output
            acts[layer, "resid_post"] = hidden.clone()

        handles += [
            block.register_forward_pre_hook(block_pre, with_kwargs=True),
            o_proj.register_forward_pre_hook(o_pre),
            attn.register_forward_hook(attn_post),
            attn_out.register_forward_hook(attn_out_post),
            mlp.register_forward_hook(mlp_post),
            block.register_forward_hook(block_post),
            _get(block, layout.mlp).register_forward_pre_hook(mlp_pre, with_kwargs=True),
        ]
        if layout.mid is not None:
            mid = _get(block, layout.mid)
            handles.append(mid.register_forward_pre_hook(mid_pre, with_kwargs=True))
    try:
        logits = model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, acts


@torch.inference_mode()
def hf_patchscope(model: nn.Module, source_ids: list[int], source_pos: int, source_layer: int,
                  target_ids: list[int], target_pos: int, target_layer: int,
                  max_new_tokens: int, pad_token_id: int) -> list[int]:
    """A patchscope the plain way: a forward hook reads block ``source_layer``'s output at
    ``source_pos``; another overwrites block ``target_layer``'s output at ``target_pos`` during
    the prompt pass of HF ``generate`` (greedy, with its own KV cache). Returns the new ids."""
    blocks = _get(model, _parts(model).blocks)
    seen = {}

    def read(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        seen["h"] = hidden[0, source_pos].clone()

    handle = blocks[source_layer].register_forward_hook(read)
    try:
        model(torch.tensor([source_ids]))
    finally:
        handle.remove()

    def write(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] > 1:  # the prompt pass; later steps reuse its cached keys/values
            hidden[:, target_pos] = seen["h"]
        return output

    handle = blocks[target_layer].register_forward_hook(write)
    try:
        out = model.generate(torch.tensor([target_ids]), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad_token_id)
    finally:
        handle.remove()
    return out[0, len(target_ids):].tolist()


def _head_slice(layout, config, kind: str, head: int, dh: int) -> slice:
    """Where ``kind`` of ``head`` lies in its projection's outputs, as each family's HF
    attention code splits them."""
    n_q = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_q
    if layout.qkv_fused == "per_head":  # GPT-NeoX: view(..., H, 3 * Dh).chunk(3)
        start = head * 3 * dh + "qkv".index(kind) * dh
    elif layout.qkv_fused == "concat":  # GPT-2 split(D), Phi-3 [q | k | v]
        start = {"q": 0, "k": n_q * dh, "v": (n_q + n_kv) * dh}[kind] + head * dh
    else:
        start = head * dh
    return slice(start, start + dh)


@torch.inference_mode()
def hf_input_edit(model: nn.Module, ids: torch.Tensor, *, layer: int, component: str,
                  head: int | None, position: int, value: torch.Tensor, mode: str = "add"):
    """Logits with one per-node input edited at ``position``: for q/k/v_input, the residual
    stream that ``head``'s projection rows read (the full projection is rerun on the edited
    residual through the norm, and that head's outputs spliced in); for mlp_input, the MLP
    norm's input. ``mode`` "add" adds ``value``, "replace" sets it."""
    layout = _parts(model)
    block = _get(model, layout.blocks)[layer]
    attn = _get(block, layout.attn)
    config = model.config
    handles, seen = [], {}

    def edited(x):
        x = x.clone()
        x[:, position] = x[:, position] + value if mode == "add" else value
        return x

    if component == "mlp_input":
        reader = _get(block, layout.mlp_norm or layout.mlp)

        def pre(module, args, kwargs):
            if args:
                return (edited(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: edited(kwargs[key])}

        handles.append(reader.register_forward_pre_hook(pre, with_kwargs=True))
    else:
        kind = component[0]
        norm = _get(block, layout.attn_norm) if layout.attn_norm else (lambda x: x)

        def block_pre(module, args, kwargs):
            seen["x"] = args[0] if args else kwargs["hidden_states"]

        proj = _get(attn, layout.qkv[0] if layout.qkv_fused else layout.qkv["qkv".index(kind)])
        n_q = config.num_attention_heads
        width = proj.weight.shape[1 if layout.qkv_in_out else 0]
        n_kv = getattr(config, "num_key_value_heads", None) or n_q
        dh = width // (3 * n_q if layout.qkv_fused == "per_head" else
                       (n_q + 2 * n_kv) if layout.qkv_fused else (n_q if kind == "q" else n_kv))

        def proj_post(module, args, output):
            out = output.clone()
            x = norm(edited(seen["x"]))  # the module itself would call this hook again
            weight = module.weight if layout.qkv_in_out else module.weight.T
            other = x @ weight + (module.bias if module.bias is not None else 0)
            cut = _head_slice(layout, config, kind, head, dh)
            out[..., cut] = other[..., cut]
            return out

        handles += [block.register_forward_pre_hook(block_pre, with_kwargs=True),
                    proj.register_forward_hook(proj_post)]
    try:
        return model(ids).logits
    finally:
        for handle in handles:
            handle.remove()


def hf_input_grad(model: nn.Module, ids: torch.Tensor, *, layer: int, component: str,
                  head: int | None, metric) -> torch.Tensor:
    """d metric(last-position logits) / d one reader's input [B, P, D], by plain autograd:
    a zero added to the residual stream as only that reader sees it (one head's q/k/v
    projection rows through the norm, the MLP norm's input, or the final norm's input for
    ``component="logits"``)."""
    layout = _parts(model)
    config = model.config
    delta = torch.zeros(*ids.shape, config.hidden_size, requires_grad=True)
    handles, seen = [], {}

    def add(args, kwargs):
        if args:
            return (args[0] + delta, *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, {**kwargs, key: kwargs[key] + delta}

    if component == "logits":
        final = _get(model, layout.final_norm)
        handles.append(final.register_forward_pre_hook(lambda m, a, k: add(a, k),
                                                       with_kwargs=True))
    elif component == "mlp_input":
        block = _get(model, layout.blocks)[layer]
        reader = _get(block, layout.mlp_norm or layout.mlp)
        handles.append(reader.register_forward_pre_hook(lambda m, a, k: add(a, k),
                                                        with_kwargs=True))
    else:
        block = _get(model, layout.blocks)[layer]
        attn = _get(block, layout.attn)
        kind = component[0]
        norm = _get(block, layout.attn_norm) if layout.attn_norm else (lambda x: x)
        proj = _get(attn, layout.qkv[0] if layout.qkv_fused else layout.qkv["qkv".index(kind)])
        n_q = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_q
        width = proj.weight.shape[1 if layout.qkv_in_out else 0]
        dh = width // (3 * n_q if layout.qkv_fused == "per_head" else
                       (n_q + 2 * n_kv) if layout.qkv_fused else (n_q if kind == "q" else n_kv))

        def block_pre(module, args, kwargs):
            seen["x"] = args[0] if args else kwargs["hidden_states"]

        def proj_post(module, args, output):
            weight = module.weight if layout.qkv_in_out else module.weight.T
            bias = module.bias if module.bias is not None else 0
            cut = _head_slice(layout, config, kind, head, dh)
            other = norm(seen["x"] + delta) @ weight + bias
            same = norm(seen["x"]) @ weight + bias
            out = output.clone()
            out[..., cut] = output[..., cut] + (other - same)[..., cut]
            return out

        handles += [block.register_forward_pre_hook(block_pre, with_kwargs=True),
                    proj.register_forward_hook(proj_post)]
    try:
        value = metric(model(ids).logits[:, -1]).sum()
    finally:
        for handle in handles:
            handle.remove()
    (grad,) = torch.autograd.grad(value, [delta])
    return grad

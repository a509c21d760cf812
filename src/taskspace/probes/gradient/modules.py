"""Readable module names for parameters, so task spaces can be split by where sharing happens.

Every parameter maps to one of ``embed`` (token and position embeddings), ``block{i}.attn``,
``block{i}.mlp``, ``block{i}.norm`` (the layer norms inside block i), ``final`` (final norm and an
untied output head), or — for a part of a block that is none of these — ``block{i}.other``; anything
else outside the blocks is ``other``. Names follow GPT-2 (``transformer.h.{i}.attn``), GPT-NeoX
(``gpt_neox.layers.{i}.attention``) and Llama-style models (``model.layers.{i}.self_attn``); the input and
output embeddings are also recognised by identity, so any architecture with ``get_input_embeddings`` /
``get_output_embeddings`` gets them right. Tied embeddings count once: parameters come from
``model.named_parameters()``, which de-duplicates shared tensors.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

# the first ".<digits>." after a container of blocks is the block index
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers?|blocks?|decoder_layers|encoder_layers)\.(\d+)\.(.*)$")
_ANY_INDEX = re.compile(r"(?:^|\.)(\d+)\.(.*)$")
_NORM = re.compile(r"(^|_)(ln|norm|layernorm|layer_norm|rmsnorm)(_?\d*)$|norm", re.IGNORECASE)
_ATTN = re.compile(r"attn|attention|self_att|q_proj|k_proj|v_proj|o_proj", re.IGNORECASE)
_MLP = re.compile(r"mlp|feed_forward|ffn|ff|fc\d*|dense_h_to_4h|dense_4h_to_h|gate_proj|up_proj|"
                  r"down_proj|experts?|moe", re.IGNORECASE)
_EMBED = re.compile(r"(^|\.)(wte|wpe|embed_in|embed_tokens|embed_positions|word_embeddings|"
                    r"position_embeddings|token_embeddings|tok_embeddings|embeddings?)(\.|$)", re.IGNORECASE)
_FINAL = re.compile(r"(^|\.)(ln_f|final_layer_norm|final_layernorm|norm|final_norm|lm_head|embed_out|"
                    r"output|head)(\.|$)", re.IGNORECASE)


def _module_from_name(name: str) -> str:
    m = _BLOCK.search(name) or _ANY_INDEX.search(name)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        part = rest.split(".")[0]
        # norms first: GPT-NeoX's "post_attention_layernorm" also contains "attention"
        if _NORM.search(part):
            return f"block{i}.norm"
        if _ATTN.search(part):
            return f"block{i}.attn"
        if _MLP.search(part):
            return f"block{i}.mlp"
        return f"block{i}.other"
    if _EMBED.search(name):
        return "embed"
    if _FINAL.search(name):
        return "final"
    return "other"


def module_of(param_name: str, model: Any = None) -> str:
    """The readable module of parameter ``param_name`` (see the module docstring).

    With ``model`` the input embedding and an untied output head are recognised by identity, which
    covers architectures whose names the patterns do not know.
    """
    if model is not None:
        ident = _embedding_ids(model)
        try:
            p = model.get_parameter(param_name)
        except (AttributeError, TypeError):
            p = None
        if p is not None:
            if id(p) == ident.get("input"):
                return "embed"
            if id(p) == ident.get("output"):
                return "final"
    return _module_from_name(param_name)


def _embedding_ids(model: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, getter in (("input", "get_input_embeddings"), ("output", "get_output_embeddings")):
        try:
            mod = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            mod = None
        w = getattr(mod, "weight", None) if mod is not None else None
        if w is not None:
            out[key] = id(w)
    return out


def param_modules(model: Any) -> dict[str, str]:
    """``{param_name: module}`` for every (de-duplicated) parameter of ``model``, in parameter order."""
    ident = _embedding_ids(model)
    out: dict[str, str] = {}
    for name, p in model.named_parameters():
        if id(p) == ident.get("input"):
            out[name] = "embed"
        elif id(p) == ident.get("output"):
            out[name] = "final"
        else:
            out[name] = _module_from_name(name)
    return out


def layer_index(module: str) -> int | None:
    """The block index of a module name (``block3.mlp`` → 3); None for ``embed``, ``final``, ``other``."""
    m = re.fullmatch(r"block(\d+)\.\w+", module)
    return int(m.group(1)) if m else None


def module_order(modules: Iterable[str]) -> list[str]:
    """Unique module names in model order: embed, block0.norm/attn/mlp/other, block1…, final, other."""
    rank = {"norm": 0, "attn": 1, "mlp": 2, "other": 3}

    def key(m: str) -> tuple:
        i = layer_index(m)
        if m == "embed":
            return (0, 0, 0)
        if i is not None:
            return (1, i, rank.get(m.split(".", 1)[1], 9))
        return (2, 0 if m == "final" else 1, 0)

    return sorted(set(modules), key=key)


def resolve_modules(model_or_map: Any, names: Iterable[str]) -> dict[str, str]:
    """``{name: module}`` for ``names``: from a model, from a ready mapping, or by name patterns alone."""
    names = list(names)
    if isinstance(model_or_map, Mapping):
        return {n: model_or_map.get(n) or _module_from_name(n) for n in names}
    if model_or_map is not None and hasattr(model_or_map, "named_parameters"):
        full = param_modules(model_or_map)
        return {n: full.get(n) or _module_from_name(n) for n in names}
    return {n: _module_from_name(n) for n in names}

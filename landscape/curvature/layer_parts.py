"""Which part of a transformer a module is: embedding, attention, MLP, norm or head.

A model is read as a transformer when one of its module paths names attention
(``attn``, ``attention``, ``q_proj``, ...: :data:`ATTENTION_WORDS`). Its modules inside a
numbered block (``transformer.h.0``, ``bert.encoder.layer.1``, ``blocks.3``) are
``attention`` (the path names attention), ``norm`` (a normalization layer) or ``mlp`` (the
rest of the block: GPT-2's ``mlp.c_fc``, BERT's ``intermediate`` and ``output.dense``);
outside the blocks they are
``embedding`` (an ``nn.Embedding`` or a path naming ``embed``), ``norm``, or ``head``
(classifiers, poolers, output projections). Other models get no parts.

Example:
    >>> from torch import nn
    >>> block = nn.ModuleDict({"attn": nn.Linear(2, 2), "ln": nn.LayerNorm(2)})
    >>> model = nn.ModuleDict({"wte": nn.Embedding(3, 2), "h": nn.ModuleList([block])})
    >>> parts = layer_parts(model)
    >>> parts["wte"], parts["h.0.attn"], parts["h.0.ln"]
    ('embedding', 'attention', 'norm')
"""

from __future__ import annotations

from torch import nn

PARTS = ("embedding", "attention", "mlp", "norm", "head")
ATTENTION_WORDS = frozenset(
    {"attn", "attention", "self_attn", "q_proj", "k_proj", "v_proj", "o_proj", "qkv", "c_attn"}
)


def _names_attention(path: str) -> bool:
    return any(segment in ATTENTION_WORDS for segment in path.split("."))


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def layer_block(path: str) -> str:
    """The numbered block a module path lies in (``transformer.h.0``), else ``""``."""
    segments = path.split(".")
    for i, segment in enumerate(segments):
        if segment.isdigit():
            return ".".join(segments[: i + 1])
    return ""


def _part(path: str, module: nn.Module) -> str:
    if _is_norm(module):
        return "norm"
    if layer_block(path):
        return "attention" if _names_attention(path) else "mlp"
    if isinstance(module, nn.Embedding) or "embed" in path.lower():
        return "embedding"
    return "head"


def layer_parts(model: nn.Module) -> dict[str, str]:
    """Module path -> its part (:data:`PARTS`); empty when the model is no transformer."""
    modules = dict(model.named_modules())
    if not any(_names_attention(path) for path in modules):
        return {}
    return {path: _part(path, module) for path, module in modules.items()}

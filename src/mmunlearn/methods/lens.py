"""The logit lens: a decoder layer's hidden state read through the final norm and LM head.

Shared by the white-box attacks (attacks/whitebox.py), which read it, and the lens defenses
(methods/lens_defenses.py), which train against it — so both see exactly the same distribution.
Model-agnostic: the decoder's layers, final norm and output embedding are found through the standard
``get_decoder()`` / ``get_output_embeddings()`` accessors, never by model family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


def decoder_parts(model):
    """(decoder layers, final norm, LM head) of a causal or image-text-to-text model."""
    decoder = model.get_decoder()
    norm = getattr(decoder, "norm", None) or getattr(decoder, "final_layernorm", None)
    if norm is None or not hasattr(decoder, "layers"):
        raise ValueError(f"{type(decoder).__name__}: no decoder layers / final norm to read a logit lens from")
    return decoder.layers, norm, model.get_output_embeddings()


def resolve_layers(model, layers: Sequence[int]) -> list[int]:
    """1-based layer numbers; a negative number counts from the top (-1: the last layer), so one params
    setting reads the same depth band of a 4-layer tiny model and a 32-layer 7B model."""
    count = len(decoder_parts(model)[0])
    resolved = [number + count + 1 if number < 0 else number for number in layers]
    bad = [given for given, number in zip(layers, resolved) if not 1 <= number <= count]
    if bad:
        raise ValueError(f"layers {bad}: the model has layers 1..{count} (or -{count}..-1)")
    return resolved


@contextlib.contextmanager
def captured_layer_outputs(model, chosen: Sequence[int], last: int | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Forward hooks keeping each chosen layer's output (1-based numbers): the last ``last`` positions,
    or every position (``None``), gradients kept — a defense trains through them."""
    layers = decoder_parts(model)[0]
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for number in chosen:
        if not 1 <= number <= len(layers):
            raise ValueError(f"layer {number}: the model has layers 1..{len(layers)}")

        def keep(_module, _inputs, output, number=number):
            hidden = output[0] if isinstance(output, tuple) else output
            captured[number] = hidden if last is None else hidden[:, -last:, :]

        hooks.append(layers[number - 1].register_forward_hook(keep))
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def lens_logprobs(model, hidden: torch.Tensor) -> torch.Tensor:
    """log-softmax(LM head(final norm(hidden))) over the vocabulary, in float32."""
    _, norm, head = decoder_parts(model)
    return torch.log_softmax(head(norm(hidden)).float(), dim=-1)

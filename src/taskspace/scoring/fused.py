"""Python-written tanh-GELUs (GPT-2's ``gelu_new``) run as torch's fused kernel of the same formula.

Five element-wise ops become one (float rounding only); see :func:`fused_activations`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

# torch is imported inside the functions that use it: `import taskspace` and the command line start without it

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: transformers' tanh-approximated GELUs written out in Python (five element-wise kernels each):
#: GPT-2's ``gelu_new``, ``gelu_fast`` and ``gelu_python_tanh``
_PY_TANH_GELUS = ("NewGELUActivation", "FastGELUActivation", "GELUTanh", "PytorchGELUTanh")
#: (activation class, dtype) → whether it computes torch's tanh-GELU; checked once per process
_GELU_VERDICTS: dict[tuple[type, Any], bool] = {}


def _same_function(a: Any, b: Any, dtype: "torch.dtype") -> bool:
    """Whether activations ``a`` and ``b`` agree to float rounding on a grid of inputs of ``dtype``."""
    import torch

    x = torch.cat([torch.linspace(-12, 12, 4001, dtype=torch.float64),
                   torch.tensor([0.0, 1e-6, -1e-6, 30.0, -30.0], dtype=torch.float64)]).to(dtype)
    with torch.no_grad():
        ya, yb = a(x).double(), b(x).double()
    tol = {torch.float64: 1e-12, torch.float32: 2e-6}.get(dtype, 2e-2)
    return bool(torch.allclose(ya, yb, rtol=tol, atol=tol))


@contextmanager
def fused_activations(model: Any) -> Iterator[int]:
    """Run the model's Python-written tanh-GELUs with torch's fused kernel of the same formula.

    GPT-2's ``gelu_new`` is ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` spelled out as separate
    element-wise ops; ``torch.nn.GELU(approximate="tanh")`` computes the same function in one pass
    (2.2× faster on CPU, about a fifth of a small GPT-2's forward time). Each module is swapped only
    after a check on a grid of inputs that the two agree to float rounding (once per class and
    dtype), and only when nothing is
    hooked onto it; the originals are put back on exit, also after an error. Yields the number of
    modules swapped. Nested use is harmless (swapped modules are no longer candidates).
    """
    import torch

    swapped: list[tuple[Any, str, Any]] = []
    try:
        dtype = next(model.parameters()).dtype
        fused = torch.nn.GELU(approximate="tanh")
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                cls = type(child)
                if cls.__name__ not in _PY_TANH_GELUS or child._forward_hooks or child._forward_pre_hooks:
                    continue
                if (cls, dtype) not in _GELU_VERDICTS:
                    _GELU_VERDICTS[cls, dtype] = _same_function(child, fused, dtype)
                if _GELU_VERDICTS[cls, dtype]:
                    setattr(parent, name, fused)
                    swapped.append((parent, name, child))
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)

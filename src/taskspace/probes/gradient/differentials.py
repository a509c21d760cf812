"""Gradient differentials ḡ_t: the learning signal of one task (docs/design.md, "Gradient differentials").

For pair i, ``g_i = ∇θ [NLL(good_i) − NLL(bad_i)] = −∇θ margin_i``; for task t, ``ḡ_t = mean_i g_i``
over its training pairs. One backward pass per batch of sentences (batched by a token budget), with
the loss ``−Σ_i margin_i / n_pairs`` so the gradients accumulate to the task mean.

What a good and a bad sentence share cancels in the difference — exactly so for a sentence that
occurs on both sides (BLiMP has identical pairs): each unique sentence of a task gets one coefficient
(+1 per time it is a good sentence, −1 per time it is a bad one) and is scored once; coefficients that
sum to zero drop out before any arithmetic is done.

:class:`TaskGradients` keeps ḡ_t per task in memory or streams it to ``store/<task>.safetensors`` (one
file per task, optionally in bfloat16/float16) so memory stays bounded for large models; the Gram matrix
is computed by streaming one parameter tensor (in row chunks) across all tasks at a time.
"""
from __future__ import annotations

import math
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ...errors import InputError, TaskspaceError
from ...io import atomic_path, read_json, write_json
from ...progress import progress_bar
from ...provenance import timestamp, torch_threads, versions
from ...scoring import Head, batch_logprobs, encode, fused_activations, length_batches, resolve_prefix
from ...scoring.batching import backward_batch_tokens
from ..common import convention_of, sentence_coefficients
from ..output import task_filename
from ..settings import with_overrides
from .modules import module_order, resolve_modules

if TYPE_CHECKING:  # pragma: no cover
    from ...suites.schema import Suite
    from ..settings import ProbeSettings

STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                  "float64": torch.float64}
_INDEX = "index.json"
# elements of one [tasks × chunk] block streamed for the Gram matrix (float32: 64 MiB)
_GRAM_BLOCK = 1 << 24


class TaskGradients:
    """Per-task gradient differentials ḡ_t, in memory or on disk (one safetensors file per task).

    Attributes: ``tasks`` (ids, suite order), ``groups`` (aligned with ``tasks``), ``param_names``,
    ``shapes`` (``{name: shape}``), ``modules`` (``{name: readable module}``), ``n_pairs``
    (``{task: pairs averaged}``), ``convention`` (how sentences were scored), ``provenance``.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        groups: Sequence[str],
        param_names: Sequence[str],
        shapes: Mapping[str, Sequence[int]],
        *,
        modules: Mapping[str, str] | None = None,
        n_pairs: Mapping[str, int] | None = None,
        convention: dict | None = None,
        provenance: dict | None = None,
        store: str | Path | None = None,
        storage_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.tasks = list(tasks)
        self.groups = list(groups)
        if len(self.groups) != len(self.tasks):
            raise ValueError(f"{len(self.groups)} groups for {len(self.tasks)} tasks")
        self.param_names = list(param_names)
        self.shapes = {n: tuple(int(s) for s in shapes[n]) for n in self.param_names}
        self.modules = resolve_modules(modules, self.param_names)
        self.n_pairs = dict(n_pairs or {})
        self.convention = dict(convention or {})
        self.provenance = dict(provenance or {})
        self.store = Path(store) if store is not None else None
        self.storage_dtype = storage_dtype
        self._mem: dict[str, dict[str, torch.Tensor]] = {}
        self._norms: dict[str, float] | None = None

    # -- construction ----------------------------------------------------------------------------
    def put(self, task: str, grad: Mapping[str, torch.Tensor]) -> None:
        """Store ḡ_t of ``task`` (a full ``{param_name: tensor}``) in memory or in the store."""
        if task not in self.tasks:
            raise KeyError(task)
        data = {n: grad[n].detach().to("cpu", self.storage_dtype).contiguous() for n in self.param_names}
        self._norms = None
        if self.store is None:
            self._mem[task] = data
            return

        with atomic_path(self.store / f"{task_filename(task)}.safetensors") as tmp:
            save_file(data, str(tmp), metadata={"task": task, "kind": "gradient_differential"})

    def save_index(self) -> None:
        """Write ``store/index.json`` so :meth:`open` can find this store again."""
        if self.store is None:
            raise TaskspaceError("these gradients are in memory; there is no store to index")
        write_json(self.store / _INDEX, {
            "tasks": self.tasks, "groups": self.groups, "param_names": self.param_names,
            "shapes": {n: list(s) for n, s in self.shapes.items()}, "modules": self.modules,
            "files": {t: f"{task_filename(t)}.safetensors" for t in self.tasks},
            "n_pairs": self.n_pairs, "convention": self.convention, "provenance": self.provenance,
            "storage_dtype": str(self.storage_dtype).replace("torch.", ""),
        })

    @classmethod
    def open(cls, store: str | Path) -> "TaskGradients":
        """Gradients written to ``store`` by :func:`task_gradients` (reads ``index.json``)."""
        store = Path(store)
        idx_path = store / _INDEX
        if not idx_path.exists():
            raise InputError("no gradient store here (index.json missing)", file=idx_path)
        try:
            idx = read_json(idx_path)
            return cls(idx["tasks"], idx["groups"], idx["param_names"], idx["shapes"],
                       modules=idx.get("modules"), n_pairs=idx.get("n_pairs"),
                       convention=idx.get("convention"), provenance=idx.get("provenance"),
                       store=store, storage_dtype=STORAGE_DTYPES[idx.get("storage_dtype", "float32")])
        except (ValueError, KeyError) as e:
            raise InputError(f"malformed gradient index ({e})", file=idx_path) from None

    # -- access ----------------------------------------------------------------------------------
    def _file(self, task: str) -> Path:
        assert self.store is not None
        path = self.store / f"{task_filename(task)}.safetensors"
        if not path.exists():
            raise InputError("gradient file missing", file=path)
        return path

    def get(self, task: str) -> dict[str, torch.Tensor]:
        """ḡ_t of ``task`` as ``{param_name: tensor}`` (same shapes as the parameters), float32 — or
        float64 when stored in float64 (``storage_dtype="float64"``, for exact checks)."""
        if task not in self.tasks:
            raise KeyError(task)
        if self.store is None:
            if task not in self._mem:
                raise KeyError(f"no gradient stored for task {task!r}")
            return {n: _widen(t) for n, t in self._mem[task].items()}

        data = load_file(str(self._file(task)))
        return {n: _widen(data[n]) for n in self.param_names}

    def flat(self, task: str) -> torch.Tensor:
        """ḡ_t as one 1-D tensor (dtype as :meth:`get`), parameters in ``param_names`` order."""
        g = self.get(task)
        return torch.cat([g[n].reshape(-1) for n in self.param_names])

    @property
    def n_parameters(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def norms(self) -> dict[str, float]:
        """``{task: ‖ḡ_t‖₂}`` over all parameters (float64 accumulation)."""
        if self._norms is None:
            out = {}
            for t in self.tasks:
                g = self.get(t)
                out[t] = math.sqrt(sum(float(v.double().pow(2).sum()) for v in g.values()))
            self._norms = out
        return dict(self._norms)

    def gram(self, per_module: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``G[a, b] = ḡ_a · ḡ_b`` over all parameters, and (``per_module``) the same per module.

        Streams one parameter tensor, in chunks of rows, across all tasks at a time: memory is
        ``tasks × chunk``, never ``tasks × model``. Chunk products run in float32, accumulated in float64.
        """
        n = len(self.tasks)
        total = np.zeros((n, n), dtype=np.float64)
        by_module: dict[str, np.ndarray] = {m: np.zeros((n, n)) for m in module_order(self.modules.values())}
        with ExitStack() as stack:
            handles = None
            if self.store is not None:
                handles = [stack.enter_context(safe_open(str(self._file(t)), framework="pt"))
                           for t in self.tasks]
            for name in self.param_names:
                shape = self.shapes[name]
                rows = shape[0] if shape else 1
                per_row = max(1, math.prod(shape[1:]) if len(shape) > 1 else 1)
                step = max(1, _GRAM_BLOCK // max(1, n * per_row))
                acc = np.zeros((n, n), dtype=np.float64)
                for start in range(0, rows, step):
                    sl = slice(start, min(rows, start + step))
                    block = torch.stack([x.reshape(-1) for x in self._chunk(name, sl, shape, handles)])
                    acc += (block @ block.T).double().numpy()
                acc = (acc + acc.T) / 2          # float32 products are not exactly symmetric
                total += acc
                if per_module:
                    by_module[self.modules[name]] += acc
        return total, (by_module if per_module else {})

    def _chunk(self, name: str, sl: slice, shape: tuple, handles: list | None) -> Iterator[torch.Tensor]:
        for i, t in enumerate(self.tasks):
            if handles is None:
                v = self._mem[t][name]
                yield (v[sl] if shape else v).float()
            else:
                if not shape:
                    yield handles[i].get_tensor(name).float()
                else:
                    yield handles[i].get_slice(name)[sl].float()

    def __repr__(self) -> str:
        where = f"store={str(self.store)!r}" if self.store is not None else "in memory"
        return (f"TaskGradients(tasks={len(self.tasks)}, parameters={self.n_parameters}, {where}, "
                f"dtype={str(self.storage_dtype).replace('torch.', '')})")


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def autocast_context(device: Any, autocast: str = "none") -> Any:
    """``torch.autocast(device_type, bfloat16)`` for ``autocast="bf16"``, else a no-op context.

    Under autocast the matrix products run in bfloat16 while the parameters — and so their ``.grad``,
    where ḡ_t accumulates — stay float32 (the float32 master-weight recipe)."""
    if autocast in (None, "", "none"):
        return nullcontext()
    if autocast != "bf16":
        raise TaskspaceError(f"unknown autocast {autocast!r}; choose none or bf16")
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def iter_task_gradients(
    model: Any,
    tokenizer: Any,
    by_task: Mapping[str, Sequence[Any]],
    settings: "ProbeSettings | None" = None,
    *,
    reuse: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Iterator[tuple[str, dict[str, torch.Tensor | None]]]:
    """Yield ``(task, {param_name: ḡ_t tensor or None})`` for each task, ḡ_t living in ``.grad``.

    The scoring convention (``reduction``, ``prefix``), ``batch_tokens`` and ``autocast`` come from
    ``settings`` (:class:`~taskspace.probes.settings.ProbeSettings`; ``overrides`` replace single fields).

    The tensors are the parameters' own ``.grad`` — valid until the next task starts. With
    ``reuse=False`` each task's tensors are handed over (``.grad`` reset to None: a caller may keep
    them); with ``reuse=True`` they are zeroed in place and reused, so no model-sized buffer is
    allocated per task (fresh multi-hundred-MB buffers cost page faults — system time — on every
    task). The model is in eval mode while iterating; its flags, mode and ``.grad`` are restored
    when the generator finishes or is closed.
    """
    s = with_overrides(settings, overrides, "iter_task_gradients")
    reduction, prefix, autocast = s.reduction, s.prefix, s.autocast
    # a backward holds every layer's activations: at most BACKWARD_TOKENS padded tokens a batch
    batch_tokens = backward_batch_tokens(s.batch_tokens)
    token, token_id = resolve_prefix(tokenizer, prefix)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else (token_id if token_id is not None else 0)
    params = list(model.named_parameters())
    saved_flags = [p.requires_grad for _, p in params]
    saved_grads = [p.grad for _, p in params]
    was_training = model.training
    head = Head(model)
    device = params[0][1].device if params else torch.device("cpu")
    model.eval()
    try:
        for _, p in params:
            p.requires_grad_(True)
            p.grad = None

        with (progress_bar("gradient differentials", total=len(by_task), show=progress) as advance,
              fused_activations(model)):
            for task, pairs in by_task.items():
                coef = sentence_coefficients(pairs)
                sents = list(coef)
                ids = encode(tokenizer, sents, token_id) if sents else []
                weights = [coef[s] for s in sents]
                # a sentence with a single token has nothing scored (logp = 0, no gradient)
                keep = [i for i, x in enumerate(ids) if len(x) > 1]
                lengths = [len(ids[i]) for i in keep]
                for batch in length_batches(lengths, batch_tokens):
                    rows = [keep[j] for j in batch]
                    with autocast_context(device, autocast):
                        lp = batch_logprobs(model, [ids[i] for i in rows], reduction=reduction, head=head,
                                            pad_id=pad_id)
                    lp = lp.float() if lp.dtype in (torch.bfloat16, torch.float16) else lp
                    w = torch.tensor([weights[i] for i in rows], dtype=lp.dtype, device=lp.device)
                    # loss = −Σ margin / n_pairs: backward accumulates ḡ_t = −∇ mean margin
                    loss = -(w * lp).sum() / len(pairs)
                    loss.backward()
                yield task, {n: p.grad for n, p in params}
                for _, p in params:
                    if reuse and p.grad is not None:
                        p.grad.zero_()
                    else:
                        p.grad = None
                advance(1)
    finally:
        for (_, p), flag, g in zip(params, saved_flags, saved_grads):
            p.requires_grad_(flag)
            p.grad = g
        model.train(was_training)


def gradient_provenance(model: Any, describe: dict | None, suite_train: "Suite", convention: dict,
                        batch_tokens: int) -> dict:
    """What every gradient-based space records about how ḡ was computed."""
    return {"created": timestamp(),
            "model": describe or {"architecture": type(model).__name__,
                                  "n_parameters": sum(p.numel() for p in model.parameters())},
            "convention": convention, "suite": suite_train.describe(), "batch_tokens": batch_tokens,
            "backward_batch_tokens": backward_batch_tokens(batch_tokens), "versions": versions(),
            "torch_threads": torch_threads()}


def _unwrap(model: Any, tokenizer: Any) -> tuple[Any, Any, dict | None]:
    """(model, tokenizer, description) from a model or a :class:`LoadedModel`."""
    if hasattr(model, "describe") and hasattr(model, "model"):
        return model.model, tokenizer if tokenizer is not None else model.tokenizer, model.describe()
    return model, tokenizer, None


def task_gradients(
    model: Any,
    tokenizer: Any,
    suite_train: "Suite",
    settings: "ProbeSettings | None" = None,
    *,
    store: str | Path | None = None,
    storage_dtype: torch.dtype | str = torch.float32,
    progress: bool = True,
    **overrides: Any,
) -> TaskGradients:
    """ḡ_t for every task of ``suite_train`` (use its training split), as :class:`TaskGradients`.

    ``model`` is a ``transformers`` causal LM or a :class:`~taskspace.models.loading.LoadedModel`
    (then ``tokenizer`` may be None and the model's description goes into the provenance). The model
    is used in eval mode (no dropout); its ``requires_grad`` flags, training mode and any existing
    ``.grad`` are restored afterwards. With ``store`` each ḡ_t is written to
    ``store/<task>.safetensors`` as soon as it is computed (memory: one model's worth of gradients).
    ``autocast="bf16"``: forward and backward under bfloat16 autocast, ḡ accumulated in float32. The
    convention, ``batch_tokens`` and ``autocast`` come from ``settings`` (``overrides`` replace fields).

    This keeps one full copy of ḡ per task (in memory or on disk): the exact reference. For large
    models use the sketch mode of :func:`~taskspace.probes.gradient.similarity.run_gradient_probes`.
    """
    model, tokenizer, describe = _unwrap(model, tokenizer)
    s = with_overrides(settings, overrides, "task_gradients")
    grads = empty_task_gradients(model, tokenizer, describe, suite_train, s, store=store,
                                 storage_dtype=storage_dtype)
    shapes = {n: p for n, p in model.named_parameters()}
    for task, g in iter_task_gradients(model, tokenizer, suite_train.by_task(), s, progress=progress):
        grads.put(task, {n: (v if v is not None else torch.zeros_like(shapes[n])) for n, v in g.items()})
    if store is not None:
        grads.save_index()
    return grads


def empty_task_gradients(model: Any, tokenizer: Any, describe: dict | None, suite_train: "Suite",
                         settings: "ProbeSettings", *, store: str | Path | None = None,
                         storage_dtype: torch.dtype | str = torch.float32) -> TaskGradients:
    """A :class:`TaskGradients` for the tasks of ``suite_train`` with everything but the gradients: tasks,
    groups, parameter names and shapes, modules, pairs per task, convention and provenance (what
    :func:`task_gradients` fills, and the split-half pass's one-pass route fills from the halves)."""
    if isinstance(storage_dtype, str):
        if storage_dtype not in STORAGE_DTYPES:
            raise TaskspaceError(f"unknown storage dtype {storage_dtype!r}; choose one of "
                                 f"{', '.join(STORAGE_DTYPES)}")
        storage_dtype = STORAGE_DTYPES[storage_dtype]
    by_task = suite_train.by_task()
    if not by_task:
        raise InputError("the suite has no pairs to compute gradients from", field="tasks")
    params = list(model.named_parameters())
    names = [n for n, _ in params]
    convention = convention_of(model, tokenizer, settings)
    prov = gradient_provenance(model, describe, suite_train, convention, settings.batch_tokens)
    if settings.autocast not in (None, "", "none"):
        prov["autocast"] = settings.autocast
    return TaskGradients(list(by_task), [suite_train.group_of(t) for t in by_task], names,
                         {n: tuple(p.shape) for n, p in params}, modules=resolve_modules(model, names),
                         n_pairs={t: len(ps) for t, ps in by_task.items()}, convention=convention,
                         provenance=prov, store=store, storage_dtype=storage_dtype)


def _storage(model: Any) -> str:
    """Keep gradients in float64 for a float64 model (exact checks), float32 otherwise."""
    return "float64" if next(model.parameters()).dtype == torch.float64 else "float32"


def task_gradient_stream(model: Any, tokenizer: Any, split: "Suite", tasks: Sequence[str],
                         settings: "ProbeSettings") -> Iterator[tuple[str, Any]]:
    """``(task, TaskGradients of that one task)`` for each task of ``split``, one at a time, so at most
    one task's dense gradient differential is in memory."""
    for t in tasks:
        yield t, task_gradients(model, tokenizer, split.select([t]), settings,
                                storage_dtype=_storage(model), progress=False)


def sparse_dots(rows: dict[str, tuple["torch.Tensor", "torch.Tensor"]], tasks: Sequence[str],
                dense: "torch.Tensor") -> np.ndarray:
    """``[⟨dense, v_a⟩ for a in tasks]`` for sparse ``v_a = (indices, values)``, accumulated in float64."""
    return np.array([float((dense[idx].double() * val.double()).sum()) for idx, val in
                     (rows[a] for a in tasks)])

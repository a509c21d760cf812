"""FTGD — fine-tuning via gradient differentials (docs/design.md, "Probes"), and the entangled baseline.

FTGD trains ``θ_a = θ_0 + Δ_a`` with ``Δ_a`` non-zero only on the mask ``M_a``, minimising over task
a's training pairs either ``mean_i [NLL(good_i) − NLL(bad_i)] = −mean margin`` (objective
``difference``, the paper's) or the bounded ``mean_i −log σ(margin_i)`` (``logistic``). The entangled
baseline (:func:`finetune_lm`) is plain fine-tuning on the good sentences only (per-token NLL), all
parameters, with the same optimiser, step cap and early stopping.

How the model is treated, and why:

- It is never copied per task. Only the masked entries are gathered into one float32 vector that Adam
  trains; after each step they are scattered back into the model. The original values are saved
  (not recomputed) and copied back at the end, so the model is bit-identical afterwards — also when
  the fine-tuning fails.
- Parameters with no masked entry get ``requires_grad=False`` for the duration, so the backward pass
  does not even compute their weight gradients: the masked step costs less than a plain step,
  not more (``benchmarks/bench_probes.py`` measures it).
- Adam has no weight decay, so an entry outside the mask can never move.
- The model stays in eval mode: no dropout, so a probe is deterministic for a seed.
- Early stopping keeps the state with the best dev loss (evaluated every ``eval_every`` steps and at
  the last step); ``Δ`` is taken from that state.
- A non-finite loss (or non-finite trained values) marks the result ``failed`` with the reason; the
  model is restored and the caller goes on with the next task.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...scoring import Head, batch_logprobs, encode, fused_activations, quiet_transformers, resolve_prefix
from ..gradient.differentials import autocast_context
from ..settings import ProbeSettings, with_overrides
from .deltas import Delta, applied

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ...suites.schema import Pair

__all__ = ["FTGDResult", "applied", "ftgd", "finetune_lm", "FT_OBJECTIVES"]

#: objectives on pairs (FTGD) and the baseline's language-modelling objective on good sentences
FT_OBJECTIVES = ("difference", "logistic", "lm")


@dataclass
class FTGDResult:
    """Outcome of one fine-tuning: the delta (None when failed) and how it went.

    ``history`` holds ``train_loss`` (one value per step run) and ``dev`` (``{"step", "loss"}`` per
    dev evaluation, step 0 = before training). ``mask_size`` counts the trained entries.
    """

    status: str                       # "ok" | "failed" | "no_improvement" (best dev loss at step 0)
    reason: str | None
    delta: Delta | None
    objective: str
    steps_run: int
    best_step: int
    stopped_early: bool
    mask_size: int
    n_parameters: int
    seconds: float
    history: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """Everything but the delta, JSON-ready."""
        return {"status": self.status, "reason": self.reason, "objective": self.objective,
                "steps_run": self.steps_run, "best_step": self.best_step,
                "stopped_early": self.stopped_early, "mask_size": self.mask_size,
                "mask_fraction": self.mask_size / self.n_parameters if self.n_parameters else 0.0,
                "n_parameters": self.n_parameters, "seconds": self.seconds,
                "delta_norm": self.delta.norm() if self.delta is not None else None,
                "history": self.history, "settings": self.settings}


# -- trainable views of the model --------------------------------------------------------------------
class _Trainable:
    """What the optimiser trains: a view of the model that can snapshot, give a Delta, and restore."""

    params: list["torch.Tensor"]
    n_entries: int

    def after_backward(self) -> None: ...
    def after_step(self) -> None: ...
    def snapshot(self) -> Any: ...
    def delta(self, snap: Any) -> Delta: ...
    def finite(self) -> bool: ...
    def restore(self) -> None: ...


class _Sparse(_Trainable):
    """Masked entries gathered into one float32 leaf vector; the model's tensors get them scattered back."""

    def __init__(self, model: Any, mask: Mapping[str, "torch.Tensor"]) -> None:
        named = dict(model.named_parameters())
        unknown = [n for n in mask if n not in named]
        if unknown:
            raise InputError(f"mask names parameters the model does not have: {', '.join(unknown[:3])}",
                             field="mask")
        self._named = named
        self._flags = {n: p.requires_grad for n, p in named.items()}
        self.items: list[tuple[str, torch.Tensor, torch.Tensor, int, int]] = []
        orig: list[torch.Tensor] = []
        off = 0
        with torch.no_grad():
            for name, p in named.items():
                m = mask.get(name)
                if m is not None and tuple(m.shape) != tuple(p.shape):
                    raise InputError(f"mask of {name} has shape {tuple(m.shape)}, parameter "
                                     f"{tuple(p.shape)}", field="mask")
                idx = (m.reshape(-1).to(p.device).nonzero().squeeze(1) if m is not None
                       else torch.empty(0, dtype=torch.long, device=p.device))
                p.requires_grad_(idx.numel() > 0)
                if idx.numel():
                    self.items.append((name, p, idx, off, off + idx.numel()))
                    orig.append(p.data.view(-1)[idx])
                    off += idx.numel()
        self.n_entries = off
        dev = next(model.parameters()).device
        self._orig = orig  # in the parameters' own dtype: copied back bit-exactly
        self.master = (torch.cat([o.float() for o in orig]) if orig
                       else torch.empty(0, device=dev)).requires_grad_(True)
        self._orig_flat = self.master.detach().clone()
        self.params = [self.master]

    def after_backward(self) -> None:
        grads = []
        for _, p, idx, _, _ in self.items:
            g = p.grad
            grads.append(g.view(-1)[idx].float() if g is not None
                         else torch.zeros(idx.numel(), device=idx.device))
            p.grad = None
        self.master.grad = torch.cat(grads) if grads else None

    def after_step(self) -> None:
        with torch.no_grad():
            for _, p, idx, a, b in self.items:
                p.data.view(-1).index_copy_(0, idx, self.master[a:b].to(p.dtype))

    def snapshot(self) -> "torch.Tensor":
        return self.master.detach().clone()

    def delta(self, snap: "torch.Tensor") -> Delta:
        diff = (snap - self._orig_flat).cpu()
        entries = {name: (idx.cpu(), diff[a:b].clone()) for name, _, idx, a, b in self.items}
        shapes = {name: tuple(p.shape) for name, p, _, _, _ in self.items}
        return Delta(entries, shapes)

    def finite(self) -> bool:
        return bool(torch.isfinite(self.master).all())

    def restore(self) -> None:
        with torch.no_grad():
            for (_, p, idx, _, _), o in zip(self.items, self._orig):
                p.data.view(-1).index_copy_(0, idx, o)
                p.grad = None
        for name, p in self._named.items():
            p.requires_grad_(self._flags[name])


class _Dense(_Trainable):
    """All parameters trained in place (the baseline, and full fine-tuning as a control)."""

    def __init__(self, model: Any) -> None:
        self._named = dict(model.named_parameters())
        self._flags = {n: p.requires_grad for n, p in self._named.items()}
        for p in self._named.values():
            p.requires_grad_(True)
        with torch.no_grad():
            self._orig = {n: p.detach().clone() for n, p in self._named.items()}
        self.params = list(self._named.values())
        self.n_entries = sum(p.numel() for p in self.params)

    def snapshot(self) -> dict[str, "torch.Tensor"]:
        return {n: p.detach().clone() for n, p in self._named.items()}

    def delta(self, snap: dict[str, "torch.Tensor"]) -> Delta:
        entries = {n: (None, (snap[n].float() - self._orig[n].float()).reshape(-1).cpu())
                   for n in self._named}
        shapes = {n: tuple(p.shape) for n, p in self._named.items()}
        return Delta(entries, shapes)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    def restore(self) -> None:
        with torch.no_grad():
            for n, p in self._named.items():
                p.data.copy_(self._orig[n])
                p.grad = None
                p.requires_grad_(self._flags[n])


# -- data and losses -----------------------------------------------------------------------------------
@dataclass
class _Encoded:
    good: list[list[int]]
    bad: list[list[int]]


def _encode_pairs(tokenizer: Any, pairs: Sequence["Pair"], prefix_id: int | None) -> _Encoded:
    return _Encoded(encode(tokenizer, [p.good for p in pairs], prefix_id),
                    encode(tokenizer, [p.bad for p in pairs], prefix_id))


def _chunks(rows: Sequence[int], lengths: Sequence[int], per_row: int, batch_tokens: int) -> list[list[int]]:
    """Consecutive chunks of ``rows`` whose padded size (``per_row`` sequences each) fits the budget."""
    out: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for r in rows:
        w = max(width, lengths[r])
        if cur and w * per_row * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, w = [], lengths[r]
        cur.append(r)
        width = w
    if cur:
        out.append(cur)
    return out


class _Loss:
    """The objective over a set of rows, summed chunk by chunk (bounded memory), optionally with backward.

    Pair objectives: ``difference`` → ``−margin``, ``logistic`` → ``softplus(−margin)`` (= −log σ),
    averaged over pairs. ``lm`` → total NLL of the good sentences / their number of scored tokens.
    """

    def __init__(self, model: Any, data: _Encoded, objective: str, reduction: str, pad_id: int,
                 batch_tokens: int, autocast: str = "none") -> None:
        self.autocast = autocast
        self.device = next(model.parameters()).device
        self.model, self.data, self.objective = model, data, objective
        self.reduction, self.pad_id, self.batch_tokens = reduction, pad_id, batch_tokens
        self.head = Head(model)
        if objective == "lm":
            self.lengths = [len(g) for g in data.good]
            self.per_row = 1
        else:
            self.lengths = [max(len(g), len(b)) for g, b in zip(data.good, data.bad)]
            self.per_row = 2

    def __call__(self, rows: Sequence[int], *, backward: bool) -> float:
        if self.objective == "lm":
            denom = float(sum(max(len(self.data.good[r]) - 1, 0) for r in rows)) or 1.0
        else:
            denom = float(len(rows))
        total = 0.0
        with torch.set_grad_enabled(backward):
            for chunk in _chunks(rows, self.lengths, self.per_row, self.batch_tokens):
                if self.objective == "lm":
                    ids = [self.data.good[r] for r in chunk]
                    ids_ok = [x for x in ids if len(x) > 1]
                    if not ids_ok:
                        continue
                    with autocast_context(self.device, self.autocast):
                        lp = _widen(batch_logprobs(self.model, ids_ok, reduction="sum", head=self.head,
                                                   pad_id=self.pad_id))
                    loss = -lp.sum() / denom
                else:
                    ids = [self.data.good[r] for r in chunk] + [self.data.bad[r] for r in chunk]
                    with autocast_context(self.device, self.autocast):
                        lp = _widen(batch_logprobs(self.model, ids, reduction=self.reduction, head=self.head,
                                                   pad_id=self.pad_id))
                    margin = lp[: len(chunk)] - lp[len(chunk):]
                    terms = -margin if self.objective == "difference" else F.softplus(-margin)
                    loss = terms.sum() / denom
                if backward:
                    loss.backward()
                total += float(loss.detach())
        return total


def _widen(lp: "torch.Tensor") -> "torch.Tensor":
    """Log-probabilities from a bfloat16 autocast forward, in float32 for the loss (float64 stays)."""
    return lp.float() if lp.dtype in (torch.bfloat16, torch.float16) else lp


def _batches(n: int, batch_pairs: int, seed: int) -> Callable[[], list[int]]:
    """An endless, seeded stream of mini-batches: consecutive slices of fresh permutations (epochs)."""
    rng = np.random.default_rng(seed)
    size = max(1, min(batch_pairs, n))
    buf: list[int] = []

    def next_batch() -> list[int]:
        while len(buf) < size:
            buf.extend(int(i) for i in rng.permutation(n))
        out = buf[:size]
        del buf[:size]
        return out

    return next_batch


# -- the training loop -----------------------------------------------------------------------------
def _finetune(
    model: Any,
    tokenizer: Any,
    train_pairs: Sequence["Pair"],
    dev_pairs: Sequence["Pair"],
    mask: Mapping[str, "torch.Tensor"] | None,
    s: ProbeSettings,
    *,
    objective: str,
    reduction: str,
    on_step: Callable[[int, float], None] | None,
) -> FTGDResult:
    """The loop both :func:`ftgd` and :func:`finetune_lm` run (GPT-2's gelu_new as one fused kernel, the
    same formula), through the mask (``_Sparse``) or on every parameter (``_Dense``)."""
    with fused_activations(model):
        return _train(model, tokenizer, train_pairs, dev_pairs,
                      (lambda: _Dense(model)) if mask is None else (lambda: _Sparse(model, mask)),
                      objective=objective, steps=s.steps, lr=s.lr, patience=s.patience, eval_every=s.eval_every,
                      batch_pairs=s.batch_pairs, reduction=reduction, prefix=s.prefix,
                      batch_tokens=s.batch_tokens, seed=s.seed, on_step=on_step, autocast=s.autocast)


def _train(
    model: Any,
    tokenizer: Any,
    train_pairs: Sequence["Pair"],
    dev_pairs: Sequence["Pair"],
    trainable_factory: Callable[[], _Trainable],
    *,
    objective: str,
    steps: int,
    lr: float,
    patience: int,
    eval_every: int,
    batch_pairs: int,
    reduction: str,
    prefix: str,
    batch_tokens: int,
    seed: int,
    on_step: Callable[[int, float], None] | None,
    autocast: str = "none",
) -> FTGDResult:
    _check_train_args(objective, train_pairs, steps, eval_every, batch_pairs, patience)
    t0 = time.perf_counter()
    _, prefix_id = resolve_prefix(tokenizer, prefix)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else (prefix_id if prefix_id is not None else 0)
    train = _Loss(model, _encode_pairs(tokenizer, train_pairs, prefix_id), objective, reduction, pad_id,
                  batch_tokens, autocast)
    dev = (_Loss(model, _encode_pairs(tokenizer, dev_pairs, prefix_id), objective, reduction, pad_id,
                 batch_tokens, autocast) if dev_pairs else None)
    n_params = sum(p.numel() for p in model.parameters())
    settings = {"objective": objective, "steps": steps, "lr": lr, "patience": patience,
                "eval_every": eval_every, "batch_pairs": batch_pairs, "reduction": reduction,
                "prefix": prefix, "seed": seed, "n_train": len(train_pairs), "n_dev": len(dev_pairs),
                "optimizer": "Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=0)"}
    if autocast not in (None, "", "none"):
        settings["autocast"] = autocast

    was_training = model.training
    model.eval()
    trainable = trainable_factory()
    fit = _Fit(trainable, dev, list(range(len(dev_pairs))))
    status, reason = "ok", None
    opt = None
    try:
        if trainable.n_entries == 0:
            raise _Failed("the mask is empty: nothing to fine-tune")
        opt = _adam(trainable, lr)
        with quiet_transformers():               # once for all of the fine-tuning's model calls
            _fit_steps(fit, opt, train, _batches(len(train_pairs), batch_pairs, seed), steps=steps,
                       eval_every=eval_every, patience=patience, on_step=on_step)
        status, reason, delta = _outcome(fit)
    except _Failed as e:
        status, reason, delta = "failed", str(e), None
    finally:
        trainable.restore()
        del opt
        model.train(was_training)
    return FTGDResult(status=status, reason=reason, delta=delta, objective=objective, steps_run=fit.step,
                      best_step=fit.best_step if status == "ok" else 0, stopped_early=fit.stopped_early,
                      mask_size=trainable.n_entries, n_parameters=n_params,
                      seconds=time.perf_counter() - t0,
                      history={"train_loss": fit.train_loss, "dev": fit.dev_hist}, settings=settings)


def _check_train_args(objective: str, train_pairs: Sequence["Pair"], steps: int, eval_every: int,
                      batch_pairs: int, patience: int) -> None:
    if objective not in FT_OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of difference, logistic",
                         field="objective")
    if not train_pairs:
        raise InputError("no training pairs for fine-tuning", field="train_pairs")
    if steps < 1 or eval_every < 1 or batch_pairs < 1 or patience < 1:
        raise InputError("steps, eval_every, batch_pairs and patience must be >= 1", field="steps")


def _adam(trainable: _Trainable, lr: float) -> Any:
    return torch.optim.Adam(trainable.params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


@dataclass
class _Fit:
    """What a fine-tuning records while it trains: the losses, the steps run and the best dev state."""

    trainable: _Trainable
    dev: "_Loss | None"
    dev_rows: list[int]
    train_loss: list[float] = field(default_factory=list)
    dev_hist: list[dict] = field(default_factory=list)
    best_step: int = 0
    best_snap: Any = None
    best_dev: float = math.inf
    stopped_early: bool = False
    step: int = 0

    def dev_eval(self, at: int) -> bool:
        """Record the dev loss at step ``at``; True when it is a new best."""
        loss = self.dev(self.dev_rows, backward=False)
        self.dev_hist.append({"step": at, "loss": loss})
        if not math.isfinite(loss):
            raise _Failed(f"non-finite dev loss at step {at}")
        if loss < self.best_dev:
            self.best_dev, self.best_step, self.best_snap = loss, at, self.trainable.snapshot()
            return True
        return False


def _fit_steps(fit: _Fit, opt: Any, train: "_Loss", next_batch: Callable[[], Any], *, steps: int,
               eval_every: int, patience: int, on_step: Callable[[int, float], None] | None) -> None:
    """Up to ``steps`` optimizer steps, with the dev loss every ``eval_every`` steps and at the last one;
    stops early after ``patience`` dev evaluations without a new best."""
    trainable = fit.trainable
    since_best = 0
    if fit.dev is not None:
        fit.dev_eval(0)
    for step in range(1, steps + 1):
        fit.step = step
        opt.zero_grad(set_to_none=True)
        loss = train(next_batch(), backward=True)
        fit.train_loss.append(loss)
        if not math.isfinite(loss):
            raise _Failed(f"non-finite training loss at step {step}")
        trainable.after_backward()
        opt.step()
        trainable.after_step()
        if on_step is not None:
            on_step(step, loss)
        if fit.dev is not None and (step % eval_every == 0 or step == steps):
            since_best = 0 if fit.dev_eval(step) else since_best + 1
            if since_best >= patience and step < steps:
                fit.stopped_early = True
                break


def _outcome(fit: _Fit) -> tuple[str, str | None, Delta | None]:
    """``(status, reason, Δ)`` of a fine-tuning that ran: Δ from the best dev state (or the last one
    without a dev set)."""
    trainable = fit.trainable
    if not trainable.finite():
        raise _Failed(f"non-finite parameter values after step {fit.step}")
    if fit.dev is None:
        fit.best_step, fit.best_snap = fit.step, trainable.snapshot()
    delta = trainable.delta(fit.best_snap)
    if fit.dev is not None and fit.best_step == 0:
        # Δ = 0: nothing was learned, so a transfer row from it would be a row of zeros that looks
        # like "no transfer"; it is reported like a failure, and its row counts as missing
        return "no_improvement", (f"the dev loss never improved on step 0 (before training) in {fit.step} "
                                  "step(s); more steps, a larger lr or more training pairs may help"), None
    return "ok", None, delta


class _Failed(Exception):
    """A non-finite loss or parameter: the fine-tuning failed (reported, never raised to the user)."""


def ftgd(
    model: Any,
    tokenizer: Any,
    train_pairs: Sequence["Pair"],
    dev_pairs: Sequence["Pair"],
    mask: Mapping[str, "torch.Tensor"] | None,
    settings: "ProbeSettings | None" = None,
    *,
    on_step: Callable[[int, float], None] | None = None,
    **overrides: Any,
) -> FTGDResult:
    """Fine-tune ``model`` on one task's pairs through the mask; return ``Δ`` and leave the model as it was.

    ``mask`` maps parameter names (as in ``model.named_parameters()``) to boolean tensors of the same
    shape; parameters it leaves out are frozen. ``mask=None`` trains every parameter (full
    fine-tuning, a control). Each step takes ``batch_pairs`` training pairs from a seeded shuffle.
    Early stopping: the dev loss is evaluated before training and every ``eval_every`` steps; after
    ``patience`` evaluations without improvement training stops, and ``Δ`` comes from the best state.
    Every choice comes from ``settings`` (:class:`~taskspace.probes.settings.ProbeSettings`, whose defaults
    are the only ones; ``overrides`` replace single fields, e.g. ``steps=20``): ``objective`` —
    ``difference`` (``−mean margin``, the paper's) or ``logistic`` (``mean −log σ(margin)``), ``steps``,
    ``lr``, ``patience``, ``eval_every``, ``batch_pairs``, the scoring convention and ``seed``.
    ``autocast="bf16"``: forward and backward under bfloat16 autocast; the trained entries stay a
    float32 master copy (Adam state too) and the restore writes back the saved values bit-exactly.
    ``mask`` may be a lazy mapping (e.g. a :class:`~taskspace.probes.gradient.bitsets.BitsetMask`): it is read
    one tensor at a time.

    >>> res = ftgd(model, tok, train, dev, masks["anaphor_number_agreement"], ProbeSettings(steps=50))
    >>> with applied(model, res.delta):
    ...     scorer.score_pairs(test.pairs)
    """
    s = with_overrides(settings, overrides, "ftgd")
    return _finetune(model, tokenizer, train_pairs, dev_pairs, mask, s, objective=s.objective,
                     reduction=s.reduction, on_step=on_step)


def finetune_lm(
    model: Any,
    tokenizer: Any,
    train_pairs: Sequence["Pair"],
    dev_pairs: Sequence["Pair"],
    settings: "ProbeSettings | None" = None,
    *,
    mask: Mapping[str, "torch.Tensor"] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    **overrides: Any,
) -> FTGDResult:
    """The entangled baseline: plain fine-tuning on the *good* sentences of the pairs (per-token NLL),
    all parameters by default, with the same optimiser, step cap and early stopping as :func:`ftgd`.
    The bad sentences are never seen, so nothing isolates the phenomenon. ``settings`` / ``overrides`` as for
    :func:`ftgd` (the objective is the LM loss, its reduction the sum)."""
    s = with_overrides(settings, overrides, "finetune_lm")
    return _finetune(model, tokenizer, train_pairs, dev_pairs, mask, s, objective="lm", reduction="sum",
                     on_step=on_step)


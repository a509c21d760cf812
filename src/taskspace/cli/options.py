"""Options shared by several commands, so every command spells them the same way."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub name or local folder of a causal LM.")]
SuiteOpt = Annotated[str, typer.Option("--suite", "-s",
                                       help="'toy', 'blimp' (hub), a BLiMP folder, or a .jsonl/.csv/.tsv file.")]
Revision = Annotated[Optional[str], typer.Option(
    "--revision", "-r", help="Hub revision, or sub-folder of a local model folder (e.g. step2577).")]
BatchTokens = Annotated[int, typer.Option("--batch-tokens", min=1, help="Padded tokens per scoring batch.")]
Reduction = Annotated[str, typer.Option("--reduction", help="sum (default) or mean of token log-probs.")]
Prefix = Annotated[str, typer.Option("--prefix", help="bos: score given the BOS (else EOS) token; none: no prefix.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, or auto.")]
DType = Annotated[str, typer.Option("--dtype", help="float32 (default), float64, bfloat16, float16.")]
TrustRemote = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code (off by default).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]

# -- probes (gradients, overlap, transfer, baseline) ----------------------------------------------
Tasks = Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated task ids (default: all).")]
TrainPairs = Annotated[int, typer.Option("--train-pairs", min=1,
                                         help="Training pairs per task (gradient differentials, FTGD).")]
DevPairs = Annotated[int, typer.Option("--dev-pairs", min=0, help="Dev pairs per task (FTGD early stopping).")]
EvalPairs = Annotated[int, typer.Option("--eval-pairs", min=1, help="Held-out pairs per task (transfer).")]
MaskFraction = Annotated[Optional[float], typer.Option(
    "--mask-fraction", help="Mask = top fraction of |ḡ_t| over all parameters (default 0.05).")]
MaskThreshold = Annotated[Optional[float], typer.Option(
    "--mask-threshold", help="Mask = parameters with |ḡ_t| ≥ τ (the paper's τ = 1e-3) instead of a fraction.")]
MaskKind = Annotated[str, typer.Option("--mask-kind", help="gradient (default) or random (the random-mask "
                                                           "control, same size).")]
Control = Annotated[Optional[str], typer.Option(
    "--control", help="Also run on a control: 'first' (first checkpoint of a local model folder) or "
                      "'init' (same architecture, fresh seeded initialisation); written under DIR/control/.")]
Objective = Annotated[str, typer.Option("--objective", help="FTGD objective: difference (the paper's) or logistic.")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Fine-tuning steps per task (cap).")]
LR = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
Columns = Annotated[Optional[str], typer.Option(
    "--columns", help="For a .jsonl/.csv/.tsv suite: our fields -> the file's columns, e.g. "
                      "good=sentence1,bad=sentence2,task=paradigm[,group=COL][,pair_id=COL].")]

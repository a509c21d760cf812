"""Options shared by several commands, so every command spells them the same way."""
from __future__ import annotations

from pathlib import Path
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
ConventionOpt = Annotated[str, typer.Option(
    "--convention", help="taskspace (default): each sentence as written, a tie is not correct; lm-eval: "
                         "' ' + sentence, a tie is correct (lm-evaluation-harness's BLiMP accuracy).")]
Device = Annotated[str, typer.Option("--device", help="auto (default: CUDA, else MPS, else cpu), cpu, cuda, cuda:1, mps.")]
DType = Annotated[str, typer.Option("--dtype", help="float32 (default), float64, bfloat16, float16.")]
AttnImplementation = Annotated[Optional[str], typer.Option(
    "--attn-implementation", help="transformers' attention implementation: eager, sdpa, flash_attention_2, … "
                                  "(default: transformers' choice).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="torch CPU threads (torch.set_num_threads; default: torch's choice).")]
TrustRemote = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code (off by default).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]

# -- probes (the ProbeSettings options are generated from the dataclass in cli/probe.py) ----------------------------------------------
Tasks = Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated task ids (default: all).")]
Control = Annotated[Optional[str], typer.Option(
    "--control", help="Also run on a control: 'first' (first checkpoint of a local model folder) or "
                      "'init' (same architecture, fresh seeded initialisation); written under DIR/control/.")]
ProbeOut = Annotated[Path, typer.Option("--out", "-o", help="Folder for spaces/, stats/, masks/ (and control/).")]
Columns = Annotated[Optional[str], typer.Option(
    "--columns", help="For a .jsonl/.csv/.tsv suite: our fields -> the file's columns, e.g. "
                      "good=sentence1,bad=sentence2,task=paradigm[,group=COL][,pair_id=COL].")]

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

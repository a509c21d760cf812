"""BLiMP (Warstadt et al., 2020): the released ``<UID>.jsonl`` folder, or the hub dataset ``nyu-mll/blimp``.

Both loaders turn rows into pairs with the same function, :func:`pairs_from_rows`, so a suite loaded from
the hub equals the one loaded from the release folder, pair for pair:

- task = ``UID``, group = ``linguistics_term``, pair_id = ``str(pairID)``, good / bad =
  ``sentence_good`` / ``sentence_bad`` (kept exactly as written; scoring adds no leading space);
- the five keys are required on every row; other keys are ignored;
- sentences must be non-empty strings; ``pairID`` a string or an integer; duplicated ``pairID`` within
  a paradigm is an error; sentences, ``UID``, ``linguistics_term`` and ``pairID`` are checked by one
  definition (:func:`~taskspace.suites.schema.text_problem`: a visible character, no control character
  or lone surrogate);
- one file (or hub config) holds ONE paradigm: every row must carry the same ``UID``. The UID does not
  have to equal the file name (a renamed file still loads, under its UID), but two files with the same
  UID are refused, because the task would be split across files;
- pairs whose good and bad sentences are identical are kept (BLiMP has 7); scoring counts them as ties;
- blank lines are skipped; a UTF-8 byte-order mark is accepted.

The BLiMP ``field`` of each paradigm (syntax, morphology, semantics, syntax_semantics) is kept in
``suite.meta["blimp_fields"]`` (``{task: field}``), with the release's one spelling variant
``syntax/semantics`` (principle_A_case_2) normalised to ``syntax_semantics``. The 13 ``linguistics_term``
values are the groups, as the data says (the paper speaks of 12 phenomena).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InputError, TaskspaceError
from ..io import user_path
from ..progress import progress_bar
from .files import check_id, check_sentence, kind_of, read_jsonl
from .schema import Pair, Suite

# datasets and huggingface_hub (optional) are imported where BLiMP is fetched from the hub

HUB_DATASET = "nyu-mll/blimp"

#: The 67 BLiMP paradigm ids (``UID``), sorted; one hub config each.
BLIMP_UIDS: tuple[str, ...] = tuple(sorted((
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement",
    "animate_subject_passive", "animate_subject_trans", "causative", "complex_NP_island",
    "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1",
    "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1",
    "determiner_noun_agreement_irregular_2", "determiner_noun_agreement_with_adj_2",
    "determiner_noun_agreement_with_adj_irregular_1", "determiner_noun_agreement_with_adj_irregular_2",
    "determiner_noun_agreement_with_adjective_1", "distractor_agreement_relational_noun",
    "distractor_agreement_relative_clause", "drop_argument", "ellipsis_n_bar_1", "ellipsis_n_bar_2",
    "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising", "expletive_it_object_raising",
    "inchoative", "intransitive", "irregular_past_participle_adjectives",
    "irregular_past_participle_verbs", "irregular_plural_subject_verb_agreement_1",
    "irregular_plural_subject_verb_agreement_2", "left_branch_island_echo_question",
    "left_branch_island_simple_question", "matrix_question_npi_licensor_present", "npi_present_1",
    "npi_present_2", "only_npi_licensor_present", "only_npi_scope", "passive_1", "passive_2",
    "principle_A_c_command", "principle_A_case_1", "principle_A_case_2", "principle_A_domain_1",
    "principle_A_domain_2", "principle_A_domain_3", "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present", "sentential_negation_npi_scope",
    "sentential_subject_island", "superlative_quantifiers_1", "superlative_quantifiers_2",
    "tough_vs_raising_1", "tough_vs_raising_2", "transitive", "wh_island", "wh_questions_object_gap",
    "wh_questions_subject_gap", "wh_questions_subject_gap_long_distance", "wh_vs_that_no_gap",
    "wh_vs_that_no_gap_long_distance", "wh_vs_that_with_gap", "wh_vs_that_with_gap_long_distance",
)))

#: Row keys a BLiMP row must carry, and the Pair attribute each becomes.
BLIMP_KEYS: dict[str, str] = {"sentence_good": "good", "sentence_bad": "bad", "UID": "task",
                              "linguistics_term": "group", "pairID": "pair_id"}

_LOCAL_HINT = "give a local folder of BLiMP <UID>.jsonl files as the suite instead (e.g. ../shared/data/blimp)"


def normalise_field(value: str) -> str:
    """BLiMP's ``field`` with the release's one variant spelling (``syntax/semantics``) unified."""
    return value.replace("/", "_")


def pairs_from_rows(rows: Iterable[tuple[int, Mapping[str, Any]]], *, file: str) -> tuple[list[Pair], str | None]:
    """Pairs of ONE BLiMP paradigm from ``(line, row)`` tuples; returns ``(pairs, field)``.

    Shared by the folder and the hub loader. ``file`` and ``line`` only locate errors (for the hub,
    ``file`` names the config and ``line`` is the 1-based row). ``field`` is the paradigm's normalised
    BLiMP ``field`` (None when the rows have none).
    """
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    uid: str | None = None
    uid_group = ""
    uid_line = 0
    blimp_field: str | None = None
    # every row repeats its paradigm's UID and linguistics_term: a value that passed is not checked again
    passed: set[tuple[str, str]] = set()

    def checked_id(value: Any, line: int, key: str) -> str:
        if not (isinstance(value, str) and (key, value) in passed):
            value = check_id(value, file=file, line=line, field=key)
            passed.add((key, value))
        return value

    for line, row in rows:
        if not isinstance(row, dict) and not isinstance(row, Mapping):   # dict first: the ABC check is slow
            raise InputError(f"expected a JSON object, got {kind_of(row)}", file=file, line=line)
        for key in BLIMP_KEYS:
            if key not in row:
                raise InputError("missing field", file=file, line=line, field=key)
        good = check_sentence(row["sentence_good"], file=file, line=line, field="sentence_good")
        bad = check_sentence(row["sentence_bad"], file=file, line=line, field="sentence_bad")
        task = checked_id(row["UID"], line, "UID")
        group = checked_id(row["linguistics_term"], line, "linguistics_term")
        pair_id = check_id(row["pairID"], file=file, line=line, field="pairID")
        if uid is None:
            uid, uid_group, uid_line = task, group, line
        elif task != uid:
            raise InputError(f"UID {task!r} differs from {uid!r} on line {uid_line}; a BLiMP file holds "
                             "one paradigm (load a file of several tasks by its own path instead)",
                             file=file, line=line, field="UID")
        elif group != uid_group:
            raise InputError(f"linguistics_term {group!r} differs from {uid_group!r} on line {uid_line}; "
                             "a paradigm belongs to one group", file=file, line=line, field="linguistics_term")
        if pair_id in seen:
            raise InputError(f"duplicate pairID {pair_id!r} (first on line {seen[pair_id]})", file=file,
                             line=line, field="pairID")
        seen[pair_id] = line
        if blimp_field is None and isinstance(row.get("field"), str):
            blimp_field = normalise_field(row["field"])
        pairs.append(Pair(task=task, group=group, pair_id=pair_id, good=good, bad=bad))
    return pairs, blimp_field


def load_blimp_folder(path: str | Path) -> Suite:
    """Every ``*.jsonl`` of a BLiMP release folder, files sorted by name, one paradigm (task) each.

    >>> suite = load_blimp_folder("../shared/data/blimp")      # 67 tasks x 1,000 pairs, 13 groups
    """
    folder = user_path(path)
    if not folder.is_dir():
        raise InputError("not a folder", file=str(path))
    files = sorted(folder.glob("*.jsonl"), key=lambda p: p.name)
    if not files:
        raise InputError("the folder holds no .jsonl files (expected BLiMP's <UID>.jsonl files)",
                         file=str(path))
    pairs: list[Pair] = []
    fields: dict[str, str] = {}
    task_file: dict[str, str] = {}
    for f in files:
        rows = list(read_jsonl(f))
        if not rows:
            raise InputError("no pairs in this file", file=str(f))
        ps, blimp_field = pairs_from_rows(rows, file=str(f))
        task = ps[0].task
        if task in task_file:
            raise InputError(f"UID {task!r} is also the paradigm of {task_file[task]}; a task must be in "
                             "one file", file=str(f), line=rows[0][0], field="UID")
        task_file[task] = f.name
        if blimp_field is not None:
            fields[task] = blimp_field
        pairs.extend(ps)
    meta = {"format": "blimp", "blimp_fields": fields}
    return Suite(pairs, name="blimp", source=str(folder), meta=meta)


def load_blimp_hub(tasks: Sequence[str] | None = None, cache_dir: str | Path | None = None) -> Suite:
    """BLiMP from the Hugging Face hub dataset ``nyu-mll/blimp`` (one config per UID, split ``train``).

    Needs the ``datasets`` package (``pip install 'taskspace[hub]'``) and the hub, or a cache of it
    (``HF_HUB_OFFLINE=1`` reads the cache). When neither works, raises :class:`TaskspaceError` with one
    line that suggests a local folder. ``tasks`` picks paradigms (default: all 67, sorted).
    """
    uids = list(BLIMP_UIDS) if tasks is None else list(tasks)
    unknown = [t for t in uids if t not in BLIMP_UIDS]
    if unknown:
        raise InputError(f"not BLiMP paradigm(s): {', '.join(unknown)}", field="tasks")
    try:
        import datasets
    except ImportError:
        raise TaskspaceError("the hub suite 'blimp' needs the `datasets` package "
                             f"(pip install 'taskspace[hub]'); or {_LOCAL_HINT}") from None

    pairs: list[Pair] = []
    fields: dict[str, str] = {}
    with _quiet_hub(datasets), progress_bar("loading BLiMP from the hub", total=len(uids)) as advance:
        for uid in uids:
            try:
                ds = datasets.load_dataset(HUB_DATASET, uid, split="train",
                                           cache_dir=str(cache_dir) if cache_dir is not None else None)
            except Exception as e:  # noqa: BLE001 - offline, DNS, missing config, bad cache: one line
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise TaskspaceError(f"could not load BLiMP from the Hugging Face hub ({HUB_DATASET}, "
                                     f"config {uid}): {first}; {_LOCAL_HINT}") from None
            ps, blimp_field = pairs_from_rows(enumerate(ds, start=1), file=f"hf://datasets/{HUB_DATASET}/{uid}")
            if blimp_field is not None:
                fields[uid] = blimp_field
            pairs.extend(ps)
            advance()
    meta = {"format": "blimp", "blimp_fields": fields, "hub": HUB_DATASET}
    return Suite(pairs, name="blimp", source=f"hf://datasets/{HUB_DATASET}", meta=meta)


class _quiet_hub:
    """Silence the hub's retry warnings and datasets' own bars while loading: the user sees our bar
    and, on failure, our one line."""

    def __init__(self, datasets_mod: Any) -> None:
        self.ds = datasets_mod

    def __enter__(self) -> None:
        from datasets.utils import logging as ds_logging

        self._ds_level = ds_logging.get_verbosity()
        ds_logging.set_verbosity_error()
        self._bars = self.ds.is_progress_bar_enabled()
        self.ds.disable_progress_bars()
        try:
            from huggingface_hub.utils import logging as hub_logging

            self._hub = hub_logging
            self._hub_level = hub_logging.get_verbosity()
            hub_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover - datasets always brings huggingface_hub
            self._hub = None

    def __exit__(self, *exc: object) -> None:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity(self._ds_level)
        if self._bars:
            self.ds.enable_progress_bars()
        if self._hub is not None:
            self._hub.set_verbosity(self._hub_level)

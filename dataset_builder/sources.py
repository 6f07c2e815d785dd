"""Source adapters: one small function per real editing-benchmark format -> canonical source records.

A canonical source record is a perturbation record without its generated fields (see
``schemas/perturbation_record.schema.json``, ``$defs/source_record``). Every adapter reads one raw
record and either returns the canonical dict or raises :class:`RecordError` naming the bad field;
:func:`convert_file` turns that into one error line and carries on with the rest of the file.

The wiki sources are cloze prompts ("The gender of Igugu is"); :func:`cloze_to_question` derives the
question the record needs, and the cloze is kept verbatim in ``prompt`` for the editors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from editprobe.dataset_builder import BUILDER_VERSION
from editprobe.formats import schema_errors
from editprobe.registry import Registry, RegistryError


class RecordError(ValueError):
    """A raw record cannot be read; ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field '{field}': {reason}")
        self.field = field
        self.reason = reason


class SourceFileError(ValueError):
    """The file as a whole cannot be read (not JSON at all, not a list, unknown format)."""


@dataclass(frozen=True)
class ConversionError:
    file: str
    index: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}: record {self.index}: {self.message}"


@dataclass
class Conversion:
    """The outcome of converting one source file: good records, one error per rejected record."""

    file: Path
    format: str
    records: list[dict] = field(default_factory=list)
    errors: list[ConversionError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.records) + len(self.errors)

    def summary(self) -> str:
        return (f"{self.file.name} [{self.format}]: {len(self.records)} converted, "
                f"{len(self.errors)} rejected, {self.total} read")


# --------------------------------------------------------------------------- reading raw records

def iter_raw_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, raw_record_or_RecordError)`` for a JSON array or JSON Lines file.

    A malformed element does not stop the file: for a JSON array the file is split at its top-level
    elements (the lines that open an element at the first element's indentation), each parsed on
    its own, so one broken element yields one error and the others still parse.
    """
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        raise SourceFileError(f"{path}: the file is empty")
    if stripped[0] != "[":
        yield from _iter_jsonl(text)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        yield from _iter_array_tolerant(text)
        return
    if not isinstance(data, list):
        raise SourceFileError(f"{path}: expected a JSON array of records")
    yield from enumerate(data)


def _iter_jsonl(text: str) -> Iterator[tuple[int, Any]]:
    index = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield index, json.loads(line)
        except json.JSONDecodeError as exc:
            yield index, RecordError("<record>", f"not valid JSON ({exc.msg} at column {exc.colno})")
        index += 1


def _iter_array_tolerant(text: str) -> Iterator[tuple[int, Any]]:
    lines = text.splitlines()
    opener = None
    for line in lines[1:]:
        if line.strip():
            opener = line[: len(line) - len(line.lstrip())] + "{"
            break
    starts = [i for i, line in enumerate(lines) if opener is not None and line.rstrip() == opener]
    if not starts:
        raise SourceFileError("not valid JSON and no record boundaries could be found")
    for index, (begin, end) in enumerate(zip(starts, starts[1:] + [len(lines)])):
        chunk = "\n".join(lines[begin:end]).rstrip()
        if index == len(starts) - 1:
            chunk = chunk.removesuffix("]").rstrip()
        chunk = chunk.removesuffix(",")
        try:
            yield index, json.loads(chunk)
        except json.JSONDecodeError as exc:
            yield index, RecordError(
                "<record>", f"not valid JSON ({exc.msg} at line {begin + exc.lineno} of the file)")


# --------------------------------------------------------------------------- field accessors

def _get(raw: dict, key: str, path: str | None = None) -> Any:
    if not isinstance(raw, dict):
        raise RecordError(path or "<record>", f"expected an object, got {type(raw).__name__}")
    if key not in raw:
        raise RecordError(path or key, "missing")
    return raw[key]


def _text(raw: dict, key: str, path: str | None = None) -> str:
    value = _get(raw, key, path)
    if not isinstance(value, str):
        raise RecordError(path or key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RecordError(path or key, "empty string")
    # Some ZsRE targets start with a space; callers add their own separator.
    return value.strip()


def _answers(value: Any, path: str) -> list[str]:
    """Normalise a ground truth (str | list[str] | list[list[str]] alias groups) to a flat alias list.

    Alias groups are kept in order, so ``answers[0]`` is the first group's canonical spelling.
    """
    if isinstance(value, str):
        flat = [value]
    elif isinstance(value, list):
        flat = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                flat.append(item)
            elif isinstance(item, list) and all(isinstance(x, str) for x in item):
                flat.extend(item)
            else:
                raise RecordError(f"{path}[{i}]", f"expected a string or a list of strings, got {type(item).__name__}")
    else:
        raise RecordError(path, f"expected a string or a list, got {type(value).__name__}")
    out = list(dict.fromkeys(a.strip() for a in flat if a.strip()))
    if not out:
        raise RecordError(path, "no non-empty answer")
    return out


def _knowedit_probes(raw: dict, key: str) -> list[dict]:
    """KnowEdit ``locality`` / ``portability``: ``{kind: [{prompt, ground_truth}, ...]}``; may be absent or empty."""
    families = raw.get(key) or {}
    if not isinstance(families, dict):
        raise RecordError(key, f"expected an object of probe lists, got {type(families).__name__}")
    probes = []
    for kind, items in families.items():
        if not isinstance(items, list):
            raise RecordError(f"{key}.{kind}", f"expected a list, got {type(items).__name__}")
        for i, item in enumerate(items):
            where = f"{key}.{kind}[{i}]"
            probes.append({
                "prompt": _text(item, "prompt", f"{where}.prompt"),
                "answers": _answers(_get(item, "ground_truth", f"{where}.ground_truth"), f"{where}.ground_truth"),
                "kind": kind,
            })
    return probes


# --------------------------------------------------------------------------- cloze -> question

_COPULA = re.compile(r"^(?P<body>.+?)\s+(?P<verb>is|are|was|were)$")
_FOLLOWED_BY = re.compile(r"^(?P<body>.+?)\s+(?P<verb>is|are|was|were) followed by$")
_FOLLOWS = re.compile(r"^(?P<body>.+?)\s+follows$")


def cloze_to_question(prompt: str) -> str:
    """Turn a cloze prompt into the question it asks.

    Rule (applied in order, first match wins; the cloze itself is kept in ``prompt``):
    1. ``"<X> is|are|was|were followed by"`` -> ``"What <verb> <X> followed by?"``
    2. ``"<X> follows"`` -> ``"What does <X> follow?"``
    3. ``"<X> is|are|was|were"`` -> ``"What <verb> <x>?"`` where a leading "The " of X becomes "the ".
    4. a prompt already ending in "?" is kept; anything else -> ``"<prompt> what?"``.
    """
    text = prompt.strip()
    if m := _FOLLOWED_BY.match(text):
        return f"What {m['verb']} {m['body']} followed by?"
    if m := _FOLLOWS.match(text):
        return f"What does {m['body']} follow?"
    if m := _COPULA.match(text):
        body = m["body"]
        if body.startswith("The "):
            body = "the " + body[4:]
        return f"What {m['verb']} {body}?"
    if text.endswith("?"):
        return text
    return f"{text} what?"


# --------------------------------------------------------------------------- the adapters

def _record(source: str, file: str, index: int, *, prompt: str, question: str, answer: str | None,
            aliases: list[str], alt: str, subject: str, rephrase: str | None,
            locality: list[dict], portability: list[dict]) -> dict:
    return {
        "id": f"{source}-{index:05d}",
        "prompt": prompt,
        "question": question,
        "answer": answer,
        "answer_aliases": aliases,
        "alt": alt,
        "subject": subject,
        "subject_knowledge": None,
        "newquestion": None,
        "rephrase": rephrase,
        "locality": locality,
        "portability": portability,
        "provenance": {"source": source, "source_file": file, "index": index,
                       "builder_version": BUILDER_VERSION, "generator": None, "scheme": None},
    }


def knowedit_zsre(raw: dict, index: int, file: str) -> dict:
    """KnowEdit ZsRE: subject, prompt (a question), target_new, ground_truth: list[str], rephrase_prompt, ..."""
    aliases = _answers(_get(raw, "ground_truth"), "ground_truth")
    prompt = _text(raw, "prompt")
    return _record("knowedit_zsre", file, index, prompt=prompt, question=prompt, answer=aliases[0],
                   aliases=aliases, alt=_text(raw, "target_new"), subject=_text(raw, "subject"),
                   rephrase=_text(raw, "rephrase_prompt"), locality=_knowedit_probes(raw, "locality"),
                   portability=_knowedit_probes(raw, "portability"))


def _new_question_probe(raw: dict) -> list[dict]:
    """The EasyEdit/GPT-4 ``portability`` block ({"New Question", "New Answer"}) as one probe, or none."""
    port = raw.get("portability")
    if not port:
        return []
    return [{"prompt": _text(port, "New Question", "portability.New Question"),
             "answers": _answers(_get(port, "New Answer", "portability.New Answer"), "portability.New Answer"),
             "kind": "New_Question"}]


def mend_zsre(raw: dict, index: int, file: str) -> dict:
    """MEND/ROME ZsRE: subject, src, alt, answers, rephrase, loc ("nq question: ..."), loc_ans, portability."""
    aliases = _answers(_get(raw, "answers"), "answers")
    prompt = _text(raw, "src")
    loc = _text(raw, "loc").removeprefix("nq question:").strip()
    portability = _new_question_probe(raw)
    return _record("mend_zsre", file, index, prompt=prompt, question=prompt, answer=aliases[0],
                   aliases=aliases, alt=_text(raw, "alt"), subject=_text(raw, "subject"),
                   rephrase=_text(raw, "rephrase"),
                   locality=[{"prompt": loc, "answers": _answers(_get(raw, "loc_ans"), "loc_ans"), "kind": "nq"}],
                   portability=portability)


def knowedit_wiki_recent(raw: dict, index: int, file: str) -> dict:
    """KnowEdit WikiData_recent: cloze prompt, target_new, no top-level ground truth; nested alias groups."""
    prompt = _text(raw, "prompt")
    return _record("knowedit_wiki_recent", file, index, prompt=prompt, question=cloze_to_question(prompt),
                   answer=None, aliases=[], alt=_text(raw, "target_new"), subject=_text(raw, "subject"),
                   rephrase=None, locality=_knowedit_probes(raw, "locality"),
                   portability=_knowedit_probes(raw, "portability"))


def knowedit_wiki_counterfact(raw: dict, index: int, file: str) -> dict:
    """KnowEdit WikiData_counterfact: cloze prompt, target_new, ground_truth: str."""
    prompt = _text(raw, "prompt")
    truth = _get(raw, "ground_truth")
    if not isinstance(truth, str):
        raise RecordError("ground_truth", f"expected a string, got {type(truth).__name__}")
    # An empty ground_truth (record 629 of train_cf.json) means the source has none, as in WikiData_recent.
    truth = truth.strip() or None
    return _record("knowedit_wiki_counterfact", file, index, prompt=prompt, question=cloze_to_question(prompt),
                   answer=truth, aliases=[truth] if truth else [], alt=_text(raw, "target_new"), subject=_text(raw, "subject"),
                   rephrase=None, locality=_knowedit_probes(raw, "locality"),
                   portability=_knowedit_probes(raw, "portability"))


def easyedit_counterfact(raw: dict, index: int, file: str) -> dict:
    """EasyEdit flattened CounterFact: case_id, prompt, target_new, subject, ground_truth, rephrase_prompt, locality_*."""
    prompt = _text(raw, "prompt")
    truth = _text(raw, "ground_truth")
    locality = [{"prompt": _text(raw, "locality_prompt"),
                 "answers": _answers(_get(raw, "locality_ground_truth"), "locality_ground_truth"),
                 "kind": "neighborhood"}]
    return _record("easyedit_counterfact", file, index, prompt=prompt, question=cloze_to_question(prompt),
                   answer=truth, aliases=[truth], alt=_text(raw, "target_new"), subject=_text(raw, "subject"),
                   rephrase=_text(raw, "rephrase_prompt"), locality=locality, portability=[])


def _mend_core(raw: dict) -> dict:
    """The fields every MEND-layout ZsRE variant shares: question, answers, target, subject, rephrase."""
    aliases = _answers(_get(raw, "answers"), "answers")
    prompt = _text(raw, "src")
    return dict(prompt=prompt, question=prompt, answer=aliases[0], aliases=aliases, alt=_text(raw, "alt"),
                subject=_text(raw, "subject"), rephrase=_text(raw, "rephrase"))


def zsre_subject_replace(raw: dict, index: int, file: str) -> dict:
    """EasyEdit zsRE portability, subject replaced: MEND layout without `loc`, plus `alternative_subject` and
    `alter_subject_question` (the edited question asked about another name of the subject; after the edit
    its answer is the new target `alt`), read as one portability probe of kind `subject_replace`."""
    core = _mend_core(raw)
    _text(raw, "alternative_subject")
    probe = {"prompt": _text(raw, "alter_subject_question"), "answers": [core["alt"]], "kind": "subject_replace"}
    return _record("zsre_subject_replace", file, index, **core, locality=[], portability=[probe])


def zsre_inverse_relation(raw: dict, index: int, file: str) -> dict:
    """EasyEdit zsRE portability, inverse relation: MEND layout without `loc`, plus `inverse question` (the
    relation asked from the new target's side; after the edit its answer is the subject), read as one
    portability probe of kind `inverse_relation`."""
    core = _mend_core(raw)
    probe = {"prompt": _text(raw, "inverse question"), "answers": [core["subject"]], "kind": "inverse_relation"}
    return _record("zsre_inverse_relation", file, index, **core, locality=[], portability=[probe])


def rome_counterfact(raw: dict, index: int, file: str) -> dict:
    """ROME's CounterFact layout: case_id, requested_rewrite{prompt with "{}", subject, target_new.str,
    target_true.str}, paraphrase_prompts, neighborhood_prompts, attribute_prompts, generation_prompts, optional
    portability{New Question, New Answer}. The prompt is the template filled with the subject; the first
    paraphrase prompt is the rephrase; neighborhood prompts are locality probes answered by the true target,
    attribute prompts (other subjects that already have the new target) locality probes answered by the new
    target; generation prompts (free-text fluency prompts) are not carried."""
    rewrite = _get(raw, "requested_rewrite")
    if not isinstance(rewrite, dict):
        raise RecordError("requested_rewrite", f"expected an object, got {type(rewrite).__name__}")
    template = _text(rewrite, "prompt", "requested_rewrite.prompt")
    if template.count("{}") != 1:
        raise RecordError("requested_rewrite.prompt", "expected exactly one '{}' for the subject")
    subject = _text(rewrite, "subject", "requested_rewrite.subject")
    new = _get(rewrite, "target_new", "requested_rewrite.target_new")
    true = _get(rewrite, "target_true", "requested_rewrite.target_true")
    alt = _text(new, "str", "requested_rewrite.target_new.str")
    truth = _text(true, "str", "requested_rewrite.target_true.str")
    prompt = template.replace("{}", subject)

    def prompts(key: str) -> list[str]:
        items = _get(raw, key)
        if not isinstance(items, list):
            raise RecordError(key, f"expected a list, got {type(items).__name__}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise RecordError(f"{key}[{i}]", "expected a non-empty string")
            out.append(item.strip())
        return out

    paraphrases = prompts("paraphrase_prompts")
    prompts("generation_prompts")  # checked, not carried
    locality = ([{"prompt": p, "answers": [truth], "kind": "neighborhood"} for p in prompts("neighborhood_prompts")]
                + [{"prompt": p, "answers": [alt], "kind": "attribute"} for p in prompts("attribute_prompts")])
    portability = _new_question_probe(raw)
    return _record("rome_counterfact", file, index, prompt=prompt, question=cloze_to_question(prompt),
                   answer=truth, aliases=[truth], alt=alt, subject=subject,
                   rephrase=paraphrases[0] if paraphrases else None, locality=locality, portability=portability)


@dataclass(frozen=True)
class SourceFormat:
    name: str
    convert: Callable[[dict, int, str], dict]
    #: the perturbation-set config this format feeds by default
    config: str
    #: keys whose presence identifies the format
    signature: frozenset[str]
    #: accepted shapes of the top-level ground_truth: "none" (absent), "str", "list"
    truth_shapes: frozenset[str]

    @property
    def description(self) -> str:
        """What ``editprobe formats list`` says: the adapter's docstring."""
        return (self.convert.__doc__ or "").strip()

    def matches(self, raw: Any) -> bool:
        return (isinstance(raw, dict) and self.signature <= raw.keys()
                and _ground_truth_shape(raw) in self.truth_shapes)


def _ground_truth_shape(raw: dict) -> str:
    if "ground_truth" not in raw:
        return "none"
    return "str" if isinstance(raw["ground_truth"], str) else "list"


#: Source formats, in detection order; third parties add theirs through the entry-point group
#: ``editprobe.formats`` (a :class:`SourceFormat` object).
FORMATS: Registry[SourceFormat] = Registry("source format", "editprobe.formats", base=SourceFormat, instance=True,
                                           target_hint="package.module:FORMAT_OBJECT")
for _fmt in [
    SourceFormat("rome_counterfact", rome_counterfact, "wiki_counterfact",
                 frozenset({"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts"}),
                 frozenset({"none"})),
    SourceFormat("zsre_subject_replace", zsre_subject_replace, "zsre",
                 frozenset({"src", "alt", "answers", "alternative_subject", "alter_subject_question"}),
                 frozenset({"none"})),
    SourceFormat("zsre_inverse_relation", zsre_inverse_relation, "zsre",
                 frozenset({"src", "alt", "answers", "inverse question"}), frozenset({"none"})),
    SourceFormat("mend_zsre", mend_zsre, "zsre", frozenset({"src", "alt", "answers", "loc", "loc_ans"}),
                 frozenset({"none"})),
    SourceFormat("easyedit_counterfact", easyedit_counterfact, "wiki_counterfact",
                 frozenset({"case_id", "prompt", "target_new", "locality_prompt"}), frozenset({"str"})),
    SourceFormat("knowedit_zsre", knowedit_zsre, "zsre", frozenset({"prompt", "target_new", "rephrase_prompt"}),
                 frozenset({"list"})),
    SourceFormat("knowedit_wiki_counterfact", knowedit_wiki_counterfact, "wiki_counterfact",
                 frozenset({"prompt", "target_new"}), frozenset({"str"})),
    SourceFormat("knowedit_wiki_recent", knowedit_wiki_recent, "wiki_recent", frozenset({"prompt", "target_new"}),
                 frozenset({"none"})),
]:
    FORMATS.add(_fmt.name, _fmt)


def detect_format(raws: list[Any], file: str = "<input>") -> str:
    """The format most of the first 50 readable records match (first match in FORMATS order per record)."""
    votes: Counter[str] = Counter()
    for raw in [r for r in raws if not isinstance(r, RecordError)][:50]:
        for _, fmt in FORMATS.items():
            if fmt.matches(raw):
                votes[fmt.name] += 1
                break
    if not votes:
        raise SourceFileError(f"{file}: no known source format; pass --format (one of {', '.join(FORMATS.names())})")
    return votes.most_common(1)[0][0]


def convert_file(path: Path | str, format: str | None = None) -> Conversion:
    """Convert every readable record of a source file; unreadable ones become one error line each."""
    path = Path(path)
    raws = list(iter_raw_records(path))
    name = format or detect_format([r for _, r in raws], str(path))
    try:
        adapter = FORMATS.get(name).convert
    except RegistryError as exc:
        raise SourceFileError(f"{path}: {exc}") from None
    out = Conversion(file=path, format=name)
    for index, raw in raws:
        try:
            if isinstance(raw, RecordError):
                raise raw
            record = adapter(raw, index, path.name)
            problems = schema_errors(record, "source_record")
            if problems:
                raise RecordError("<converted>", f"does not match the source-record schema: {problems[0]}")
        except RecordError as exc:
            out.errors.append(ConversionError(str(path), index, str(exc)))
            continue
        out.records.append(record)
    return out

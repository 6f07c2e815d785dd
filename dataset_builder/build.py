"""The build: source records -> generated fields -> gated, topic-labelled released records -> HF dataset folder.

Per config (:func:`build_config`):

1. read the source file (``sources.convert_file``), first ``limit`` records;
2. wiki configs: ``subject_knowledge`` from the TARGET model, then ``newquestion`` (imported, else
   written by the LLM backend);
3. six-level paraphrases of the question (zsre) / newquestion (wiki), imported or generated, gated;
4. topic: hand-checked (imported) > LLM > embedding classifier, per ``topics``.

:func:`build` runs the configs, writes the dataset folder, its card and ``build_report.json``.
Configuration arrives as typed objects (:class:`ConfigPlan`, :class:`BuildSettings`, :class:`LLMSpec`);
nothing here reads flags or the environment (the API key is passed in by the CLI).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from editprobe.dataset_builder import BUILDER_VERSION
from editprobe.dataset_builder.card import STATS_FIGURE, card_values, plot_paraphrase_stats
from editprobe.dataset_builder.gates import GateReport, Scheme, load_scheme
from editprobe.dataset_builder.generation import (generate_newquestions, generate_paraphrases, generate_subject_knowledge,
                                                  import_paraphrases, question_sha1)
from editprobe.formats import CONFIGS, WIKI_CONFIGS, base_config
from editprobe.dataset_builder.hf_dataset import write_dataset
from editprobe.dataset_builder.llm import BACKENDS, LLM, LLMConfigError, TransformersBackend
from editprobe.dataset_builder.llm_cache import LLMCache
from editprobe.dataset_builder.sources import FORMATS, convert_file
from editprobe.registry import RegistryError
from editprobe.resources import release_dir
from editprobe.dataset_builder.topics import METHODS, EmbeddingTopicClassifier, agreement, classify_with_llm, normalise_topic

REPORT_FILE = "build_report.json"
SPLIT = "test"


class BuildError(ValueError):
    """The build cannot start or go on (bad recipe, missing file, unusable backend); one clear sentence."""


# --------------------------------------------------------------------------- typed configuration

@dataclass(frozen=True)
class LLMSpec:
    """Which LLM writes the generated text (``backend`` openai | transformers) and how it is called."""

    backend: str = "openai"   # a name of editprobe.dataset_builder.llm.BACKENDS
    model: str | None = None  # None: the backend's default_model (gpt-4o-mini / the bundled SmolLM2)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    timeout: float = 60.0
    max_retries: int = 5
    retry_base_delay: float = 1.0
    workers: int = 4
    device: str = "auto"
    max_tokens: int | None = None  # cap on every generator call's token limit (smoke builds); None: the prompts'

    def backend_class(self) -> type:
        try:
            return BACKENDS.get(self.backend)
        except RegistryError as exc:
            raise BuildError(str(exc)) from None

    def model_name(self) -> str:
        return self.model or self.backend_class().default_model


@dataclass(frozen=True)
class ConfigPlan:
    """One config of the dataset: where its records come from and how each generated field is made."""

    config: str
    source: Path
    limit: int | None = None
    paraphrases_from: Path | None = None  # a path, or a package resource (the packaged recipe's files)
    #: who wrote the imported paraphrases / newquestions (provenance); defaults to the file name
    paraphrases_by: str | None = None
    topics: str = "both"
    target_model: str | None = None  # wiki configs: None -> the bundled SmolLM2
    #: the six-level scheme of this config; None: llama3 for ``*_llama3`` configs, else the build's scheme
    scheme: str | None = None

    def scheme_name(self, default: str) -> str:
        return self.scheme or ("llama3" if self.config.endswith("_llama3") else default)


@dataclass(frozen=True)
class BuildSettings:
    scheme: str = "llama2"
    max_attempts: int = 3
    seed: int = 0
    cache_dir: Path | None = None          # the writable LLM call cache (new answers go here)
    seed_caches: tuple = ()                # read-only caches consulted after it (a recipe's committed cache)
    model_cache_dir: Path | None = None    # where local models are converted/cached (editprobe's cache root)
    llm: LLMSpec = field(default_factory=LLMSpec)
    show_progress: bool = True

    def public(self) -> dict:
        """The settings as the report records them (paths as strings; never a key, only its variable's name)."""
        d = asdict(self)
        d["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        d["seed_caches"] = [str(c) for c in self.seed_caches]
        d["model_cache_dir"] = str(self.model_cache_dir) if self.model_cache_dir else None
        d["llm"]["model"] = self.llm.model_name()
        return d


class Generators:
    """The LLMs of one build, created on first use (a build served by imported files needs none)."""

    def __init__(self, settings: BuildSettings, api_key: str | None = None, *, backends: dict | None = None):
        """``backends`` maps a model name to a ready backend object (tests; models served some other way)."""
        self.settings = settings
        self._api_key = api_key
        self._cache = LLMCache(settings.cache_dir, read_only=settings.seed_caches) if settings.cache_dir else None
        self._llm: LLM | None = None
        self._targets: dict[str, LLM] = {}
        self._backends = dict(backends or {})

    def __repr__(self) -> str:
        return f"Generators(llm={self.settings.llm.backend}:{self.settings.llm.model_name()})"

    def _wrap(self, backend, max_tokens: int | None = None) -> LLM:
        return LLM(backend, self._cache, show_progress=self.settings.show_progress, max_tokens=max_tokens)

    @property
    def llm(self) -> LLM:
        """The generator LLM (paraphrases, newquestion, LLM topics)."""
        if self._llm is None:
            spec = self.settings.llm
            cls = spec.backend_class()
            if issubclass(cls, TransformersBackend):  # one local model serves as generator and target
                backend = self._transformers(spec.model_name())
            else:
                backend = cls.from_spec(spec, model=spec.model_name(), api_key=self._api_key,
                                        cache_dir=self.settings.model_cache_dir)
            self._llm = self._wrap(backend, spec.max_tokens)
        return self._llm

    def _transformers(self, model: str):
        if model in self._backends:
            return self._backends[model]
        shared = self._llm.backend if self._llm is not None else None
        if isinstance(shared, TransformersBackend) and shared.model == model:
            return shared
        for target in self._targets.values():
            if target.backend.model == model:
                return target.backend
        return TransformersBackend(model, device=self.settings.llm.device, model_cache_dir=self.settings.model_cache_dir)

    def target(self, model: str | None) -> LLM:
        """The TARGET model (subject_knowledge), always local through transformers, greedy."""
        from editprobe.models import DEFAULT_MODEL

        model = model or DEFAULT_MODEL
        if model not in self._targets:
            self._targets[model] = self._wrap(self._transformers(model))
        return self._targets[model]

    def all(self) -> list[LLM]:
        return [llm for llm in [self._llm, *self._targets.values()] if llm is not None]

    def by_role(self) -> dict[str, dict]:
        """{"generator" | "target <model>": {"model": label, **stats}} of the LLMs this build used."""
        out = {}
        if self._llm is not None:
            out["generator"] = {"model": self._llm.label, **self._llm.stats.as_dict()}
        for model, llm in self._targets.items():
            out[f"target {model}"] = {"model": llm.label, **llm.stats.as_dict()}
        return out


# --------------------------------------------------------------------------- paraphrase files

def read_paraphrase_file(path: Path) -> dict[str, dict]:
    """{id: line} of a ``--paraphrases-from`` file (JSON Lines); a broken line raises BuildError naming it."""
    lines: dict[str, dict] = {}
    try:
        text = (Path(path) if isinstance(path, str) else path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"cannot read the paraphrase file {path}: {exc.strerror or exc}") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise BuildError(f"{path}: line {n} is not valid JSON ({exc})") from None
        if not isinstance(line, dict) or not isinstance(line.get("id"), str):
            raise BuildError(f"{path}: line {n} has no string 'id'")
        if line["id"] in lines:
            raise BuildError(f"{path}: line {n} repeats id {line['id']!r}")
        lines[line["id"]] = line
    return lines


# --------------------------------------------------------------------------- one config

@dataclass
class ConfigResult:
    records: list[dict]
    report: dict
    gates: GateReport | None = None


def _stats_delta(llms: list[LLM], before: dict[int, dict]) -> dict:
    out = Counter()
    for llm in llms:
        now, then = llm.stats.as_dict(), before.get(id(llm), {})
        for k, v in now.items():
            out[k] += v - then.get(k, 0)
    return {k: out.get(k, 0) for k in ("calls", "cache_hits", "tokens_in", "tokens_out", "failures", "retries")}


def build_config(plan: ConfigPlan, settings: BuildSettings, generators: Generators, embedder,
                 scheme: Scheme | None = None) -> ConfigResult:
    """Generate, gate and label one config; every record read is either kept or listed with its reason."""
    if plan.config not in CONFIGS:
        raise BuildError(f"unknown config {plan.config!r}; choose one of {', '.join(CONFIGS)}")
    if plan.topics not in METHODS:
        raise BuildError(f"unknown topics method {plan.topics!r}; choose one of {', '.join(METHODS)}")
    wanted = plan.scheme_name(settings.scheme)
    scheme = scheme if scheme is not None and scheme.name == wanted else load_scheme(wanted)
    before = {id(llm): llm.stats.as_dict() for llm in generators.all()}

    if not Path(plan.source).is_file():
        raise BuildError(f"config {plan.config}: source file {plan.source} not found")
    conversion = convert_file(plan.source)
    if FORMATS.get(conversion.format).config != base_config(plan.config):
        raise BuildError(f"config {plan.config}: {plan.source} is {conversion.format} data, which feeds "
                         f"config {FORMATS.get(conversion.format).config}")
    records = conversion.records[: plan.limit] if plan.limit is not None else list(conversion.records)
    lines = read_paraphrase_file(plan.paraphrases_from) if plan.paraphrases_from else None
    imported_by = plan.paraphrases_by or (f"imported from {plan.paraphrases_from.name}"
                                          if plan.paraphrases_from else None)
    excluded: dict[str, tuple[str, str]] = {}  # id -> (kind, reason)
    generator: dict[str, dict[str, str | None]] = {r["id"]: {"paraphrases": None, "subject_knowledge": None,
                                                              "newquestion": None, "topic": None} for r in records}
    alive = lambda: [r for r in records if r["id"] not in excluded]  # noqa: E731
    if lines is not None:  # an imported set covers its records; nothing is generated for the others
        for r in records:
            if r["id"] not in lines:
                excluded[r["id"]] = ("no line in the paraphrase file",
                                     f"no line for this record in {plan.paraphrases_from.name}")
            elif isinstance(lines[r["id"]].get("left_out"), str):  # the writer's reason for writing nothing
                excluded[r["id"]] = ("left out by the paraphrase writer", lines[r["id"]]["left_out"])

    # 2-3. wiki configs: subject_knowledge (target model), then newquestion
    paraphrased_text = {r["id"]: r["question"] for r in records}
    if plan.config in WIKI_CONFIGS:
        target = generators.target(plan.target_model)
        knowledge = generate_subject_knowledge(alive(), target)
        revision = getattr(target.backend, "revision", lambda: None)()
        sk_label = f"{target.label} ({revision + ', ' if revision else ''}greedy)"
        for r in alive():
            if knowledge[r["id"]]:
                r["subject_knowledge"] = knowledge[r["id"]]
                generator[r["id"]]["subject_knowledge"] = sk_label
            else:
                excluded[r["id"]] = ("no subject_knowledge", "the target model gave no subject_knowledge")
        to_write = []
        for r in alive():
            line = (lines or {}).get(r["id"])
            if line and isinstance(line.get("newquestion"), str) and line["newquestion"].strip():
                r["newquestion"] = " ".join(line["newquestion"].split())
                generator[r["id"]]["newquestion"] = imported_by
                sk_sha = line.get("subject_knowledge_sha1")
                if sk_sha is not None and sk_sha != question_sha1(r["subject_knowledge"]):
                    excluded[r["id"]] = ("subject_knowledge_sha1 mismatch",
                                         f"subject_knowledge_sha1 mismatch in {plan.paraphrases_from.name}: "
                                         f"the newquestion was written for another subject_knowledge")
            else:
                to_write.append(r)
        if to_write:
            llm = generators.llm
            written = generate_newquestions([{"id": r["id"], "subject": r["subject"],
                                              "subject_knowledge": r["subject_knowledge"]} for r in to_write],
                                            llm, max_attempts=settings.max_attempts, seed=settings.seed)
            for r in to_write:
                text, why = written[r["id"]]
                if text:
                    r["newquestion"] = text
                    generator[r["id"]]["newquestion"] = llm.label
                else:
                    excluded[r["id"]] = ("no valid newquestion", why)
        for r in alive():
            paraphrased_text[r["id"]] = r["newquestion"]

    # 1. paraphrases
    gates = GateReport(scheme.name)
    items = [{"id": r["id"], "subject": r["subject"], "question": paraphrased_text[r["id"]]} for r in alive()]
    if lines is not None:
        outcomes = import_paraphrases(items, lines, scheme, embedder, gates, source=plan.paraphrases_from.name)
        paraphrases_label = imported_by
    else:
        llm = generators.llm
        outcomes = generate_paraphrases(items, llm, scheme, embedder, gates, max_attempts=settings.max_attempts,
                                        seed=settings.seed)
        paraphrases_label = llm.label
    attempts = Counter()
    for r in alive():
        outcome = outcomes[r["id"]]
        if outcome.paraphrases is None:
            excluded[r["id"]] = (outcome.kind or outcome.reason, outcome.reason)
        else:
            r["generated_questions"] = outcome.paraphrases
            generator[r["id"]]["paraphrases"] = paraphrases_label
            if outcome.attempts:
                attempts[str(outcome.attempts)] += 1

    # 4. topics
    kept = alive()
    topic_report: dict[str, Any] = {"method": plan.topics}
    llm_topics: dict[str, str | None] = {}
    emb_topics: dict[str, str] = {}
    if kept and plan.topics in ("llm", "both"):
        llm = generators.llm
        llm_topics = classify_with_llm(kept, llm, max_attempts=settings.max_attempts, seed=settings.seed)
        topic_report["llm"] = llm.label
        topic_report["llm_invalid"] = sum(v is None for v in llm_topics.values())
    if kept and plan.topics in ("embedding", "both"):
        classifier = EmbeddingTopicClassifier(embedder)
        emb_topics = classifier.classify(kept)
        topic_report["embedding"] = classifier.label
    if plan.topics == "both":
        topic_report["agreement"] = agreement(llm_topics, emb_topics)
    hand = overrides = fallbacks = 0
    checked_vs_zero_shot = Counter()
    for r in kept:
        i = r["id"]
        line = (lines or {}).get(i) or {}
        classified = llm_topics.get(i) if plan.topics != "embedding" else emb_topics.get(i)
        label = f"llm:{topic_report.get('llm')}" if plan.topics != "embedding" else topic_report.get("embedding")
        if classified is None and plan.topics == "both":
            classified, label = emb_topics.get(i), topic_report.get("embedding")
            fallbacks += 1
        checked = line.get("topic")
        if checked is not None:
            name = normalise_topic(checked)
            if name is None:
                excluded[i] = ("invalid hand-checked topic",
                               f"hand-checked topic {checked!r} is not one of the 15 categories")
                continue
            hand += 1
            overrides += name != classified
            if i in emb_topics:
                checked_vs_zero_shot["compared"] += 1
                checked_vs_zero_shot["agree"] += name == emb_topics[i]
            classified, label = name, f"assigned: {imported_by}"
        if classified is None:
            excluded[i] = ("no valid topic", f"no valid topic label after {settings.max_attempts} attempts")
            continue
        r["topic"] = classified
        generator[i]["topic"] = label
    topic_report.update({"hand_checked": hand, "overrides": overrides, "llm_fallbacks_to_embedding": fallbacks,
                         "hand_checked_vs_zero_shot": {"agree": checked_vs_zero_shot["agree"],
                                                       "compared": checked_vs_zero_shot["compared"]},
                         "distribution": dict(Counter(r["topic"] for r in kept if r.get("topic")).most_common())})

    # assemble
    out = []
    for r in records:
        if r["id"] in excluded:
            continue
        r["provenance"] = {**r["provenance"], "generator": generator[r["id"]], "scheme": scheme.name,
                           "topic_zero_shot": emb_topics.get(r["id"])}
        out.append(r)
    reasons = Counter(kind for kind, _ in excluded.values())
    made_by = {f: dict(Counter(r["provenance"]["generator"][f] or "-" for r in out).most_common())
               for f in ("paraphrases", "subject_knowledge", "newquestion", "topic")}
    report = {
        "source": Path(plan.source).name,
        "source_format": conversion.format,
        "source_rejected": len(conversion.errors),
        "scheme": scheme.name,
        "limit": plan.limit,
        "paraphrases_from": plan.paraphrases_from.name if plan.paraphrases_from else None,
        "target_model": (generators.target(plan.target_model).label if plan.config in WIKI_CONFIGS else None),
        "records_in": len(records),
        "kept": len(out),
        "excluded": len(excluded),
        "excluded_by_reason": dict(reasons.most_common()),
        "excluded_records": [{"id": i, "kind": kind, "reason": why} for i, (kind, why) in excluded.items()],
        "gates": gates.as_dict(),
        "gates_text": gates.format(),
        "paraphrase_attempts": dict(sorted(attempts.items())),
        "generators": made_by,
        "topics": topic_report,
        "llm": _stats_delta(generators.all(), before),
    }
    return ConfigResult(out, report, gates)


# --------------------------------------------------------------------------- the whole build

def build(plans: list[ConfigPlan], settings: BuildSettings, out_dir: Path, *, api_key: str | None = None,
          embedder=None, generators: Generators | None = None) -> dict:
    """Build every config, write the dataset folder + card + ``build_report.json``; return the report."""
    from editprobe.embeddings import Embedder

    schemes = {}
    for plan in plans:
        name = plan.scheme_name(settings.scheme)
        schemes.setdefault(name, load_scheme(name))
    embedder = embedder or Embedder()
    generators = generators or Generators(settings, api_key)
    data: dict[str, dict[str, list[dict]]] = {}
    configs: dict[str, dict] = {}
    gates: dict[str, GateReport] = {}
    try:
        for plan in plans:
            result = build_config(plan, settings, generators, embedder,
                                  schemes[plan.scheme_name(settings.scheme)])
            configs[plan.config] = result.report
            gates[plan.config] = result.gates
            if result.records:
                data[plan.config] = {SPLIT: result.records}
    except LLMConfigError as exc:
        raise BuildError(str(exc)) from None
    totals = {k: sum(c[k] for c in configs.values()) for k in ("records_in", "kept", "excluded")}
    llm_totals = generators.by_role()
    report = {
        "builder_version": BUILDER_VERSION,
        "scheme": settings.scheme,  # the default; each config names its own
        "schemes": {plan.config: plan.scheme_name(settings.scheme) for plan in plans},
        "gate_thresholds": {name: scheme_thresholds(sch) for name, sch in schemes.items()},
        "settings": settings.public(),
        "totals": totals,
        "llm": llm_totals,
        "configs": configs,
        "written": sorted(data),
        "not_written": [c for c in configs if c not in data],
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report["figure"] = plot_paraphrase_stats(gates, out_dir / STATS_FIGURE)
    write_dataset(out_dir, data, render_card(report, plans))
    tmp = out_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / REPORT_FILE)
    return report


def scheme_thresholds(scheme: Scheme) -> dict[str, dict]:
    """{level: {name, bounds: ["levenshtein > 0.25", ...]}} as the card and report state them."""
    out = {}
    for rule in scheme.levels:
        bounds = []
        for b in rule.bounds:
            if b.low is not None:
                bounds.append(f"{b.metric} {'>=' if b.low_inclusive else '>'} {b.low:g}")
            if b.high is not None:
                bounds.append(f"{b.metric} {'<=' if b.high_inclusive else '<'} {b.high:g}")
        out[str(rule.level)] = {"name": rule.name, "bounds": bounds}
    return out


# --------------------------------------------------------------------------- report and card text

def format_report(report: dict) -> str:
    lines = [f"editprobe build (builder {report['builder_version']})"]
    for config, c in report["configs"].items():
        lines.append(f"{config} (scheme {c['scheme']}): {c['records_in']} records in, {c['kept']} kept, "
                     f"{c['excluded']} excluded"
                     + (f"  [{c['source']}]" if c.get("source") else ""))
        for why, n in c["excluded_by_reason"].items():
            lines.append(f"  excluded x{n}: {why}")
        lines.extend("  " + line for line in c["gates_text"].splitlines())
        t = c["topics"]
        topic_line = f"  topics ({t['method']}): {t['hand_checked']} hand-checked, {t['overrides']} overrides"
        if "agreement" in t and t["agreement"]["compared"]:
            a = t["agreement"]
            topic_line += f"; LLM vs embedding agree on {a['agree']}/{a['compared']}"
        lines.append(topic_line)
        s = c["llm"]
        lines.append(f"  LLM: {s['calls']} calls, {s['cache_hits']} cache hits, {s['tokens_in']} tokens in, "
                     f"{s['tokens_out']} tokens out, {s['failures']} failures")
    t = report["totals"]
    lines.append(f"total: {t['records_in']} in, {t['kept']} kept, {t['excluded']} excluded")
    if report["not_written"]:
        lines.append(f"not written (no record kept): {', '.join(report['not_written'])}")
    return "\n".join(lines)


def render_card(report: dict, plans: list[ConfigPlan]) -> str:
    """The card prose from dataset_builder/release/card.md (``$name`` placeholders)."""
    cfg_rows = ["| config | scheme | source file | records read | kept | left out | paraphrases | subject_knowledge "
                "| newquestion | topic |", "|---|---|---|---|---|---|---|---|---|---|"]
    for plan in plans:
        c = report["configs"].get(plan.config)
        if c is None:
            continue
        kinds = _generator_summary(c)
        cfg_rows.append(f"| {plan.config} | {c['scheme']} | {c['source']} | {c['records_in']} | {c['kept']} | "
                        f"{c['excluded']} | {kinds['paraphrases']} | {kinds['subject_knowledge']} | "
                        f"{kinds['newquestion']} | {kinds['topic']} |")
    llm = report["settings"]["llm"]
    values = {
        "builder_version": report["builder_version"],
        "config_table": "\n".join(cfg_rows),
        "max_attempts": report["settings"]["max_attempts"],
        "llm": f"{llm['backend']}:{llm['model']}",
        "report_file": REPORT_FILE,
        **card_values(report),
    }
    template = release_dir().joinpath("card.md").read_text(encoding="utf-8")
    return string.Template(template).safe_substitute(values)


def _generator_summary(config_report: dict) -> dict[str, str]:
    """Per field, who produced it for the kept records ("label (n)"; "-" = the field is null)."""
    return {f: "; ".join(f"{label} ({n})" for label, n in made.items()) or "-"
            for f, made in config_report["generators"].items()}


# --------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    path: Path
    plans: list[ConfigPlan]
    settings: BuildSettings


#: Recipes shipped inside the package, by name (``editprobe build --recipe release``).
PACKAGED_RECIPES = ("release",)


def recipe_location(name_or_path: str | Path):
    """``(recipe file, its folder)`` for a path, or for the name of a packaged recipe (a package resource)."""
    path = Path(name_or_path)
    if path.is_file():
        return path, path.parent
    if str(name_or_path) in PACKAGED_RECIPES:
        folder = release_dir()
        return folder / "recipe.yaml", folder
    raise BuildError(f"no recipe {str(name_or_path)!r}: not a file, nor a packaged recipe "
                     f"({', '.join(PACKAGED_RECIPES)})")


def load_recipe(path, data_dir: Path | str) -> Recipe:
    """A recipe YAML (a path, or the name of a packaged recipe): shared settings + per config source (relative
    to ``data_dir``), limit, paraphrase file, topics method, target model. Files named by the recipe are
    relative to the recipe's folder; its ``cache_dir`` is read-only (new answers go to the writable cache the
    caller sets). Every file is checked before anything runs; the first missing one raises BuildError."""
    path, here = recipe_location(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"cannot read the recipe {path}: {exc}") from None
    data_dir = Path(data_dir)
    llm_spec = spec.get("llm") or {}
    unknown = set(llm_spec) - set(LLMSpec.__dataclass_fields__)
    if unknown:
        raise BuildError(f"recipe {path}: unknown llm setting(s) {', '.join(sorted(unknown))}")
    settings = BuildSettings(scheme=spec.get("scheme", "llama2"), max_attempts=int(spec.get("max_attempts", 3)),
                             seed=int(spec.get("seed", 0)),
                             seed_caches=(here / spec["cache_dir"],) if spec.get("cache_dir") else (),
                             llm=LLMSpec(**llm_spec))
    plans = []
    for config, c in (spec.get("configs") or {}).items():
        if config not in CONFIGS:
            raise BuildError(f"recipe {path}: unknown config {config!r}; choose from {', '.join(CONFIGS)}")
        source = data_dir / c["source"]
        if not source.is_file():
            raise BuildError(f"recipe {path}: config {config}: source file {source} not found "
                             f"(set --data-dir or EDITPROBE_DATA)")
        para = here / c["paraphrases"] if c.get("paraphrases") else None
        if para is not None and not para.is_file():
            raise BuildError(f"recipe {path}: config {config}: paraphrase file {para} not found")
        plans.append(ConfigPlan(config, source, c.get("limit"), para, c.get("paraphrases_by"),
                                c.get("topics", "embedding"), c.get("target_model"), c.get("scheme")))
    if not plans:
        raise BuildError(f"recipe {path}: no configs")
    return Recipe(path, plans, settings)


def with_overrides(settings: BuildSettings, **changes) -> BuildSettings:
    """Settings with the non-None ``changes`` applied (``llm__x`` keys go to the LLMSpec)."""
    llm_changes = {k.removeprefix("llm__"): v for k, v in changes.items() if k.startswith("llm__") and v is not None}
    top = {k: v for k, v in changes.items() if not k.startswith("llm__") and v is not None}
    return replace(settings, **top, llm=replace(settings.llm, **llm_changes))

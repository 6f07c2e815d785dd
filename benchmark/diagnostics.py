"""Least-squares editing diagnostics: ``editprobe diagnose <name>``.

Each diagnostic is a YAML file under ``tasks/diagnostics/`` naming its ``diagnostic`` kind, the records it edits
(real ZsRE records read from the source data), and its parameters; ``ci:`` holds the overrides of the CI-sized
run (``--ci``). A run writes ``<out>/<name>.json`` (settings, model, record ids, one row per measured point) and
``<out>/<name>.png``. The kinds reproduce the *shape* of the evidence on locate-then-edit methods on any model:

``right_vector_norms``   2-norm statistics (mean / max / min) of the vector each single edit writes, per editor
                         and clamp-norm factor. ROME: its right vector ``(v* - W k*) / ((C^-1 k*)^T k*)``;
                         MEMIT / AlphaEdit: the residual ``z* - z`` they spread over their layers.
``norm_trajectory``      the same norm over N sequential edits (no restore in between), with the drift
                         ``||W_t - W_0||_F`` of the edited matrices and, at the end, how many edits still hold.
``sweep``                Edit Success / generalization / Locality for a grid of hyper-parameter overrides
                         (the KL-term ablation and the layer sweep are sweeps); plotted as the ES-Locality frontier.
``nullspace_rank``       dimension of the near-null space of the preserved keys' second moment ``C`` per layer
                         and eigenvalue threshold (AlphaEdit's projector rank).
``preservation_sweep``   steps for a rank-one update ``r l^T`` to write ``W k* = v*`` by gradient descent on
                         ``L = L_edit + beta L_kp + gamma L_reg`` for a sweep of ``beta``; ``L_kp`` is the mean squared
                         projection of protected keys on the edit direction, ``l^T C l / l^T l``.
``causal_trace``         ROME's causal tracing of MLP outputs on facts the model knows (probability of the answer's
                         first token above ``min_p_clean``): the subject's embeddings are corrupted with noise and the
                         MLP output at the subject's last token restored at each layer (a window of layers around it);
                         the indirect effect is the recovered probability of the answer's first token.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from editprobe.benchmark import metrics as M
from editprobe.benchmark.editors import EditRequest, build_editor
from editprobe.registry import Registry
from editprobe.resources import files_with_suffix, read_yaml, stem, tasks_dir

def diagnostics_dir():
    """``tasks/diagnostics/``: one YAML spec per shipped diagnostic."""
    return tasks_dir() / "diagnostics"
COMMON_KEYS = {"diagnostic", "description", "records", "hparams", "ci", "seed"}


@dataclass
class Context:
    """What every diagnostic works on: the model, the records, and the hyper-parameter overrides."""

    model: torch.nn.Module
    tokenizer: object
    preset: str                      # preset name under tasks/hparams/<editor>/
    records: list[dict]
    cache_dir: Path
    hparams: dict                    # overrides applied to every editor preset (keys the editor knows)
    seed: int = 0
    protected: list[dict] = field(default_factory=list)   # records kept out of the edits (spec field 'protected')

    def requests(self) -> list[EditRequest]:
        return [EditRequest(r["id"], r["prompt"], r["subject"], r["alt"], r.get("answer")) for r in self.records]


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class Kind:
    run: Callable[[Context, dict], dict]
    plot: Callable[[dict, dict, Path], None]
    keys: frozenset[str]             # parameters this kind reads besides COMMON_KEYS
    description: str = ""            # one line for `editprobe diagnostics list`


#: Kinds of diagnostic (what a spec's ``diagnostic:`` field names); third parties add theirs through the
#: entry-point group ``editprobe.diagnostics`` (a :class:`Kind` object).
KINDS: Registry[Kind] = Registry("diagnostic kind", "editprobe.diagnostics", base=Kind, instance=True,
                                 target_hint="package.module:KIND_OBJECT")


def available() -> list[str]:
    """The shipped diagnostic specs (``tasks/diagnostics/*.yaml``) by name."""
    return [stem(p) for p in files_with_suffix(diagnostics_dir(), ".yaml")]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_spec(name_or_path: str | Path, ci: bool = False) -> tuple[str, dict]:
    """``(name, spec)`` from ``tasks/diagnostics/<name>.yaml`` or a path; ``ci`` applies the file's ``ci:`` block."""
    path = Path(name_or_path)
    if not path.suffix:
        path = diagnostics_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown diagnostic {str(name_or_path)!r}; known: {', '.join(available())}")
    spec = read_yaml(path) or {}
    kind = spec.get("diagnostic")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"{path}: field 'diagnostic' must be one of {', '.join(KINDS.names())}, got {kind!r}")
    allowed = COMMON_KEYS | KINDS.get(kind).keys
    for block, where in ((spec, ""), (spec.get("ci") or {}, "ci.")):
        unknown = sorted(set(block) - allowed)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(where + u for u in unknown)} for a {kind} "
                             f"diagnostic (known: {', '.join(sorted(allowed - {'ci'}))})")
    if ci:
        spec = _merge(spec, spec.get("ci") or {})
    spec.pop("ci", None)
    return path.stem, spec


def load_records(data_dir: Path, records: dict) -> list[dict]:
    """The first ``limit`` records of ``source`` (a file under the source-data folder) after ``skip``."""
    from editprobe.dataset_builder.sources import convert_file

    source = Path(data_dir) / records.get("source", "knowedit/zsre_test.json")
    result = convert_file(source)
    if result.errors:
        raise ValueError(result.errors[0])
    skip, limit = int(records.get("skip", 0)), int(records.get("limit", 20))
    return result.records[skip:skip + limit]


# --------------------------------------------------------------------------- shared measurements

def editor_for(ctx: Context, name: str, **overrides):
    """``name``'s preset for the model with the spec's overrides, then ``overrides`` (known keys only)."""
    base = build_editor(name, preset=ctx.preset, cache_dir=ctx.cache_dir)
    fields = {f.name for f in dataclasses.fields(base.hparams)}
    changes = {k: tuple(v) if isinstance(v, list) else v
               for k, v in {**ctx.hparams, **overrides}.items() if k in fields}
    editor = type(base)(base.hparams, **changes)
    editor.cache_root = base.cache_root
    return editor


def locality_probes(record: dict) -> list[tuple[str, str]]:
    return [(p["prompt"], p["answers"][0]) for p in record.get("locality", []) if p.get("answers")]


def pre_edit_argmax(ctx: Context, record: dict) -> list[list[int]]:
    probes = locality_probes(record)
    return M.teacher_forced_argmax(ctx.model, ctx.tokenizer, [p for p, _ in probes], [t for _, t in probes]) \
        if probes else []


def edit_scores(ctx: Context, record: dict, pre_argmax: list[list[int]]) -> dict:
    """Reliability, generalization and Locality of ``record``'s edit in the model's current state."""
    m, tok = ctx.model, ctx.tokenizer
    out = {"reliability": M.edit_accuracy(m, tok, [record["prompt"]], [record["alt"]])[0]}
    if record.get("rephrase"):
        out["generalization"] = M.edit_accuracy(m, tok, [record["rephrase"]], [record["alt"]])[0]
    probes = locality_probes(record)
    if probes:
        post = M.teacher_forced_argmax(m, tok, [p for p, _ in probes], [t for _, t in probes])
        out["locality"] = float(np.mean(M.locality_agreement(pre_argmax, post)))
    return out


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _right_norms(diagnostics: dict) -> list[float]:
    return [float(x) for x in diagnostics["right_vector_norm"]]


def _delta_norms(diagnostics: dict) -> list[tuple[float, float]]:
    """``(||delta||, ||init||)`` per edit: the optimised shift of the target vector (ROME: v* - v_init; MEMIT,
    AlphaEdit: z* - z_init), the seed's Table 5 "right vector", and the norm the clamp factor scales."""
    if "edits" in diagnostics:                                   # ROME: one entry per (request, layer)
        return [(float(e["v_delta_norm"]), float(e["v_init_norm"])) for e in diagnostics["edits"]]
    return [(float(d), float(i)) for d, i in zip(diagnostics["z_delta_norm"], diagnostics["z_init_norm"])]


# --------------------------------------------------------------------------- right-vector norms (single edits)

def run_right_vector_norms(ctx: Context, spec: dict) -> dict:
    rows = []
    for name in spec.get("editors", ["rome", "memit", "alphaedit"]):
        for clamp in spec.get("clamp_norm_factors", [4.0, 0.75]):
            editor = editor_for(ctx, name, clamp_norm_factor=clamp)
            right, deltas, es, seconds = [], [], [], []
            for record, request in zip(ctx.records, ctx.requests()):
                t0 = time.perf_counter()
                handle = editor.apply(ctx.model, ctx.tokenizer, [request])
                seconds.append(time.perf_counter() - t0)
                right += _right_norms(handle.diagnostics)
                deltas += _delta_norms(handle.diagnostics)
                es.append(M.edit_accuracy(ctx.model, ctx.tokenizer, [record["prompt"]], [record["alt"]])[0])
                handle.restore()
            delta = np.array([d for d, _ in deltas])
            # headline: ||delta|| (mean, min, max); extra: the update's own right vector (ROME: (v* - W k*) /
            # ((C^-1 k*)^T k*) with an unnormalised left vector; MEMIT / AlphaEdit: the residual ||z* - z||)
            rows.append({"editor": name, "clamp_norm_factor": clamp, "n": len(deltas),
                         "mean": float(delta.mean()), "max": float(delta.max()), "min": float(delta.min()),
                         "delta_over_init_max": max(d / i for d, i in deltas),
                         "update_right_vector_mean": _mean(right), "edit_success": _mean(es),
                         "seconds_per_edit": _mean(seconds)})
    return {"rows": rows}


def plot_right_vector_norms(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    editors = list(dict.fromkeys(r["editor"] for r in rows))
    clamps = list(dict.fromkeys(r["clamp_norm_factor"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / len(clamps)
    for j, clamp in enumerate(clamps):
        sel = [next(r for r in rows if r["editor"] == e and r["clamp_norm_factor"] == clamp) for e in editors]
        x = np.arange(len(editors)) + (j - (len(clamps) - 1) / 2) * width
        mean = np.array([r["mean"] for r in sel])
        err = np.array([[r["mean"] - r["min"] for r in sel], [r["max"] - r["mean"] for r in sel]])
        ax.bar(x, mean, width, yerr=err, capsize=3, label=f"clamp {clamp:g}")
    ax.set_xticks(np.arange(len(editors)), editors)
    ax.set_yscale("log")
    ax.set_ylabel("||delta|| of the target vector (mean, min-max)")
    ax.set_title("Single edits: the right vector ||delta||")
    ax.legend()
    _save(fig, path)


# --------------------------------------------------------------------------- sequential norm trajectory

def run_norm_trajectory(ctx: Context, spec: dict) -> dict:
    rows, finals = [], []
    pres = [pre_edit_argmax(ctx, r) for r in ctx.records]            # the unedited model: once for all editors
    runs = [(name, clamp) for name in spec.get("editors", ["rome", "memit", "alphaedit"])
            for clamp in spec.get("clamp_norm_factors", [4.0, 0.75])]
    for name, clamp in runs:
        editor = editor_for(ctx, name, clamp_norm_factor=clamp)
        handles = []
        try:
            for step, (record, request) in enumerate(zip(ctx.records, ctx.requests()), start=1):
                handle = editor.apply(ctx.model, ctx.tokenizer, [request])
                handles.append(handle)
                drift = handles[0].drift()            # the first handle holds W_0 (every edit touches the same matrices)
                scores = edit_scores(ctx, record, pres[step - 1])
                rows.append({"editor": name, "clamp_norm_factor": clamp, "step": step,
                             "delta_norm": _mean(d for d, _ in _delta_norms(handle.diagnostics)),
                             "update_right_vector_norm": _mean(_right_norms(handle.diagnostics)),
                             "weight_drift": drift, **scores})
            held = [edit_scores(ctx, r, p) for r, p in zip(ctx.records, pres)]
            finals.append({"editor": name, "clamp_norm_factor": clamp, "edits": len(handles),
                           "reliability_after_all": _mean(h["reliability"] for h in held),
                           "locality_after_all": _mean(h.get("locality") for h in held)})
        finally:
            for handle in reversed(handles):
                handle.restore()
    return {"rows": rows, "final": finals}


def plot_norm_trajectory(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, clamp in dict.fromkeys((r["editor"], r["clamp_norm_factor"]) for r in result["rows"]):
        sel = [r for r in result["rows"] if r["editor"] == name and r["clamp_norm_factor"] == clamp]
        steps = [r["step"] for r in sel]
        label = f"{name}, clamp {clamp:g}"
        axes[0].plot(steps, [r["delta_norm"] for r in sel], marker="o", ms=3, label=label)
        axes[1].plot(steps, [r["weight_drift"] for r in sel], marker="o", ms=3, label=label)
    axes[0].set(xlabel="sequential edit", ylabel="||delta|| of the target vector", title="Right vector per edit",
                yscale="log")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].set(xlabel="sequential edit", ylabel="||W_t - W_0||_F", title="Drift of the edited matrices")
    axes[0].legend()
    _save(fig, path)


# --------------------------------------------------------------------------- hyper-parameter sweeps

def _label(setting: dict) -> str:
    shown = {k: v for k, v in setting.items() if k != "label"}
    return setting.get("label") or (", ".join(f"{k}={v}" for k, v in shown.items()) or "preset")


def run_sweep(ctx: Context, spec: dict) -> dict:
    rows = []
    pres = [pre_edit_argmax(ctx, r) for r in ctx.records]
    for name in spec.get("editors", ["rome"]):
        for setting in spec.get("grid", [{}]):
            overrides = {k: v for k, v in setting.items() if k != "label"}
            editor = editor_for(ctx, name, **overrides)
            scores, seconds = [], []
            for record, request, pre in zip(ctx.records, ctx.requests(), pres):
                t0 = time.perf_counter()
                handle = editor.apply(ctx.model, ctx.tokenizer, [request])
                seconds.append(time.perf_counter() - t0)
                scores.append(edit_scores(ctx, record, pre))
                handle.restore()
            rows.append({"editor": name, "setting": _label(setting), "overrides": overrides,
                         **{k: _mean(s.get(k) for s in scores) for k in ("reliability", "generalization", "locality")},
                         "seconds_per_edit": _mean(seconds)})
    return {"rows": rows}


def plot_sweep(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(r["editor"] for r in result["rows"]):
        sel = [r for r in result["rows"] if r["editor"] == name]
        ax.scatter([r["locality"] for r in sel], [r["reliability"] for r in sel], label=name)
        for r in sel:
            ax.annotate(r["setting"], (r["locality"], r["reliability"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xlabel="Locality", ylabel="Edit Success (reliability)", title=spec.get("title", "Edit Success vs Locality"))
    ax.legend()
    _save(fig, path)


# --------------------------------------------------------------------------- null-space rank per layer

def run_nullspace_rank(ctx: Context, spec: dict) -> dict:
    from editprobe.benchmark.editors.context import model_cache_name
    from editprobe.benchmark.editors.covariance import second_moments
    from editprobe.benchmark.editors.layers import edit_site, resolve_layout, decoder_blocks

    editor = editor_for(ctx, "alphaedit")
    hp = editor.hparams
    layers = spec.get("layers", "all")
    if layers == "all":
        layers = list(range(len(decoder_blocks(ctx.model, resolve_layout(ctx.model, hp.module_template)))))
    sites = [edit_site(ctx.model, layer, hp.module_template) for layer in layers]
    moments = second_moments(ctx.model, ctx.tokenizer, sites, corpus=hp.mom2_dataset, n_samples=hp.mom2_n_samples,
                             dtype=hp.mom2_dtype, stats_dir=editor.stats_dir, seed=hp.seed,
                             sample_tokens=hp.mom2_sample_tokens)
    thresholds = [float(t) for t in spec.get("thresholds", [hp.nullspace_threshold])]
    rows = []
    for site in sites:
        m = moments[site.name]
        eig = torch.linalg.eigvalsh(m.moment().double()).numpy()           # ascending, [d_in]
        row = {"layer": site.layer, "module": site.name, "d_in": site.d_in, "keys": m.count,
               "eig_min": float(eig[0]), "eig_median": float(np.median(eig)), "eig_max": float(eig[-1]),
               "numerical_rank": int((eig > eig[-1] * site.d_in * np.finfo(np.float64).eps).sum())}
        for t in thresholds:
            row[f"null_dim@{t:g}"] = int((eig < t).sum())
        rows.append(row)
    return {"rows": rows, "thresholds": thresholds, "corpus": hp.mom2_dataset, "n_samples": hp.mom2_n_samples,
            "model": model_cache_name(ctx.model)}


def plot_nullspace_rank(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for t in result["thresholds"]:
        ax.plot([r["layer"] for r in rows], [r[f"null_dim@{t:g}"] for r in rows], marker="o", ms=3,
                label=f"eigenvalue < {t:g}")
    ax.axhline(rows[0]["d_in"], color="grey", lw=0.8, ls="--", label="key width")
    ax.set(xlabel="layer", ylabel="null-space dimension", title="Near-null space of preserved keys' C")
    ax.legend()
    _save(fig, path)


# --------------------------------------------------------------------------- preservation-loss sweep

def protected_key_loss(w_k_star: torch.Tensor, left: torch.Tensor, k_star: torch.Tensor, keys_p: torch.Tensor,
                       outputs_p: torch.Tensor):
    """``L_kp`` of seed Section 3.4 for ROME's rank-one update, as a function of the target ``v*``.

    With ``l = C^-1 k*`` the update is ``Delta = (v* - W k*) l^T / (l^T k*)`` (Eq. 2), so a protected key ``k_p``
    moves its output by ``Delta k_p = (v* - W k*) (l^T k_p) / (l^T k*)``. ``L_kp`` is the mean over protected keys
    of ``||Delta k_p||^2`` relative to their outputs' mean ``||W k_p||^2``:
    ``||v* - W k*||^2 * mean_p((l^T k_p / l^T k*)^2) / mean_p ||W k_p||^2``. Returns ``L_kp(v*)``; every input is
    moved to ``v*``'s device and computed in float64.
    """
    def loss(v_star: torch.Tensor) -> torch.Tensor:
        at = dict(device=v_star.device, dtype=torch.float64)
        lk = left.to(**at) @ k_star.to(**at)
        ratio = (keys_p.to(**at) @ left.to(**at)) / lk                                  # [P]
        scale = ratio.pow(2).mean() / outputs_p.to(**at).pow(2).sum(-1).mean()
        return (v_star.to(torch.float64) - w_k_star.to(**at)).pow(2).sum() * scale
    return loss


def run_preservation_sweep(ctx: Context, spec: dict) -> dict:
    """Steps for ROME's v* optimisation to reach its early-stop loss when ``beta * L_kp`` joins the objective,
    ``L_kp`` measured on the keys of protected prompts (entities outside the edited set)."""
    from editprobe.benchmark.editors.layers import edit_site, resolve_layout
    from editprobe.benchmark.editors.rome import compute_ks, compute_v

    max_steps = int(spec.get("max_steps", 200))
    editor = editor_for(ctx, "rome", mom2_adjustment=True, v_num_grad_steps=max_steps)
    hp = editor.hparams
    layer = int(spec.get("layer", hp.layers[0]))
    site = edit_site(ctx.model, layer, hp.module_template)
    layout = resolve_layout(ctx.model, hp.module_template)
    C = editor.second_moments(ctx.model, ctx.tokenizer, [site])[site.name].moment()
    groups = editor.template_groups(ctx.model, ctx.tokenizer)
    templates = [t for g in groups for t in g]
    protected = [EditRequest(r["id"], r["prompt"], r["subject"], r["alt"]) for r in ctx.protected]
    edited = {r["id"] for r in ctx.records}
    if not protected or edited & {p.record_id for p in protected}:
        raise ValueError("preservation_sweep needs protected records outside the edited set (spec field 'protected')")
    keys_p = compute_ks(ctx.model, ctx.tokenizer, site, protected, groups)                    # [P, d_in]
    with torch.no_grad():
        outputs_p = site.module(keys_p)                                                       # [P, d_out]
    betas = [float(b) for b in spec.get("betas", [0, 0.1, 1, 10, 100])]
    rows = []
    for request in ctx.requests():
        k_star = compute_ks(ctx.model, ctx.tokenizer, site, [request], [templates])[0]       # [d_in]
        with torch.no_grad():
            w_k = site.module(k_star.unsqueeze(0))[0]                                         # [d_out]
            left = torch.linalg.solve(C.to(k_star.device, torch.float64), k_star.double())    # C^-1 k*
        l_kp = protected_key_loss(w_k, left, k_star, keys_p, outputs_p)
        for beta in betas:
            extra = (lambda delta, init, b=beta: b * l_kp(init + delta)) if beta else None
            v = compute_v(ctx.model, ctx.tokenizer, request, site, templates, layout, hp, extra_loss=extra)
            converged = v.loss_last < hp.v_early_stop_loss
            rows.append({"record_id": request.record_id, "layer": layer, "beta": beta,
                         "steps_to_converge": v.steps if converged else None, "steps": v.steps,
                         "loss_last": v.loss_last, "nll_last": v.nll[-1], "L_kp": float(l_kp(v.value)),
                         "delta_norm": v.delta_norm})
    summary = []
    for beta in betas:
        sel = [r for r in rows if r["beta"] == beta]
        steps = [r["steps_to_converge"] for r in sel]
        summary.append({"beta": beta, "converged": sum(s is not None for s in steps), "records": len(sel),
                        "steps_mean": _mean(steps), "L_kp_mean": _mean(r["L_kp"] for r in sel),
                        "nll_last_mean": _mean(r["nll_last"] for r in sel)})
    return {"rows": rows, "summary": summary, "protected": [p.record_id for p in protected],
            "early_stop_loss": hp.v_early_stop_loss, "max_steps": max_steps}


def plot_preservation_sweep(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    s = result["summary"]
    x = [max(r["beta"], 1e-3) for r in s]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(x, [r["steps_mean"] if r["steps_mean"] is not None else np.nan for r in s], marker="o")
    axes[0].set(xscale="log", xlabel="beta (0 drawn at 1e-3)", ylabel="steps to converge (mean)",
                title="Convergence vs preservation weight")
    axes[1].plot(x, [r["L_kp_mean"] for r in s], marker="o", label="L_kp at the end")
    axes[1].plot(x, [r["nll_last_mean"] for r in s], marker="s", label="target NLL at the end")
    axes[1].set(xscale="log", yscale="log", xlabel="beta", title="What the penalty costs")
    axes[1].legend()
    _save(fig, path)


# --------------------------------------------------------------------------- causal tracing

@torch.no_grad()
def run_causal_trace(ctx: Context, spec: dict) -> dict:
    from editprobe.benchmark.editors.layers import decoder_blocks, edit_site, resolve_layout
    from editprobe.benchmark.editors.rome import subject_span

    model, tok = ctx.model, ctx.tokenizer
    layout = resolve_layout(model)
    n_layers = len(decoder_blocks(model, layout))
    window = int(spec.get("window", 5))
    samples = int(spec.get("samples", 10))
    embed = model.get_input_embeddings()
    noise = float(spec.get("noise_scale", 3.0)) * float(embed.weight.std())   # ROME: 3 x the embeddings' std
    sites = [edit_site(model, i) for i in range(n_layers)]
    gen = torch.Generator().manual_seed(int(spec.get("seed", ctx.seed)))
    per_record = []
    probe_kind, min_p = spec.get("probe", "locality"), float(spec.get("min_p_clean", 0.0))
    skipped = {"no_probe": 0, "below_min_p_clean": 0}
    for record in ctx.records:
        probe = _trace_probe(record, probe_kind)
        if probe is None:
            skipped["no_probe"] += 1
            continue
        prompt, answer = probe
        prompt_ids, answer_ids = M.target_token_ids(tok, prompt, answer)
        start, end = subject_span(prompt, record["subject"])
        offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]
        subj = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]
        last = subj[-1]
        ids = torch.tensor([prompt_ids])                                        # [1, T]
        clean_out: dict[int, torch.Tensor] = {}
        hooks = [s.module.register_forward_hook(
            lambda m, a, out, i=i: clean_out.__setitem__(i, out[0, last].clone())) for i, s in enumerate(sites)]
        try:
            p_clean = float(model(input_ids=ids, logits_to_keep=1).logits[0, -1].softmax(-1)[answer_ids[0]])
        finally:
            for h in hooks:
                h.remove()
        if p_clean < min_p:
            skipped["below_min_p_clean"] += 1
            continue
        emb = embed(ids).repeat(samples, 1, 1)                                  # [S, T, d]
        emb[:, subj] += noise * torch.randn(samples, len(subj), emb.shape[-1], generator=gen)

        def prob(restore: list[int]) -> float:
            hs = [sites[i].module.register_forward_hook(_restore_hook(last, clean_out[i])) for i in restore]
            try:
                return float(model(inputs_embeds=emb, logits_to_keep=1).logits[:, -1].softmax(-1)[:, answer_ids[0]].mean())
            finally:
                for h in hs:
                    h.remove()

        p_corrupt = prob([])
        restored = [prob([j for j in range(i - window // 2, i + window - window // 2) if 0 <= j < n_layers])
                    for i in range(n_layers)]
        per_record.append({"record_id": record["id"], "prompt": prompt, "answer": answer, "p_clean": p_clean,
                           "p_corrupt": p_corrupt,
                           "p_restored": restored})
    rows = [{"layer": i, "indirect_effect": _mean(r["p_restored"][i] - r["p_corrupt"] for r in per_record),
             "p_restored": _mean(r["p_restored"][i] for r in per_record)} for i in range(n_layers)]
    return {"rows": rows, "per_record": per_record, "window": window, "samples": samples, "traced": len(per_record),
            "skipped": skipped,
            "p_clean": _mean(r["p_clean"] for r in per_record), "p_corrupt": _mean(r["p_corrupt"] for r in per_record)}


def _trace_probe(record: dict, kind: str) -> tuple[str, str] | None:
    """The (prompt, answer) a trace reads: the edit prompt with the true answer, or the first locality probe
    (same subject, another relation: cloze statements such as "The country of citizenship of X is")."""
    if kind == "prompt":
        return (record["prompt"], record["answer"]) if record.get("answer") else None
    if kind != "locality":
        raise ValueError(f"causal_trace: probe must be 'prompt' or 'locality', got {kind!r}")
    for p in record.get("locality", []):
        if p.get("answers") and record["subject"].lower() in p["prompt"].lower():
            return p["prompt"], p["answers"][0]
    return None


def _restore_hook(position: int, clean: torch.Tensor):
    def hook(module, args, out):
        out = out.clone()
        out[:, position] = clean
        return out
    return hook


def plot_causal_trace(result: dict, spec: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot([r["layer"] for r in rows], [r["indirect_effect"] for r in rows], marker="o", ms=3)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="center of restored MLP window", ylabel="mean indirect effect on p(answer)",
           title=f"Causal trace: MLP at the subject's last token (window {result['window']})")
    _save(fig, path)


# --------------------------------------------------------------------------- registry and entry point

def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


KINDS.add("right_vector_norms", Kind(run_right_vector_norms, plot_right_vector_norms,
                                     frozenset({"editors", "clamp_norm_factors"}),
                                     "||delta|| of single edits (the right vector) at each clamp factor"))
KINDS.add("norm_trajectory", Kind(run_norm_trajectory, plot_norm_trajectory, frozenset({"editors", "clamp_norm_factors"}),
                                  "||delta|| and weight drift over sequential edits, per clamp factor"))
KINDS.add("sweep", Kind(run_sweep, plot_sweep, frozenset({"editors", "grid", "title"}),
                        "Edit Success and Locality over a grid of hyper-parameter values"))
KINDS.add("nullspace_rank", Kind(run_nullspace_rank, plot_nullspace_rank, frozenset({"layers", "thresholds"}),
                                 "dimension of the covariance null space per layer and threshold"))
KINDS.add("preservation_sweep", Kind(run_preservation_sweep, plot_preservation_sweep,
                                     frozenset({"layer", "betas", "max_steps", "protected"}),
                                     "steps to converge as the preservation weight grows"))
KINDS.add("causal_trace", Kind(run_causal_trace, plot_causal_trace,
                               frozenset({"window", "samples", "noise_scale", "probe", "min_p_clean"}),
                               "indirect effect of restoring MLP states on p(answer), per layer"))


def run_diagnostic(name_or_path: str | Path, out_dir: Path, *, model_id: str, device: str = "auto",
                   data_dir: Path, cache_dir: Path | None = None, ci: bool = False, limit: int | None = None,
                   model_bundle=None, preset: str | None = None) -> dict:
    """Run one diagnostic and write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.png``; returns the document.

    The editors' presets are ``preset``, else the model table's entry for ``model_id`` (an error when it has none).
    """
    import matplotlib

    matplotlib.use("Agg")
    from editprobe import __version__, git_hash
    from editprobe.benchmark.editors import preset_for_model
    from editprobe.models import load_model
    from editprobe.paths import default_cache_dir

    name, spec = load_spec(name_or_path, ci=ci)
    preset = preset or preset_for_model(model_id)
    if preset is None:
        raise ValueError(f"no preset for model {model_id!r} in tasks/hparams/models.yaml; pass --preset NAME")
    records_spec = dict(spec.get("records") or {})
    if limit is not None:
        records_spec["limit"] = limit
    records = load_records(data_dir, records_spec)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    model, tokenizer, info = model_bundle or load_model(model_id, device=device, cache_dir=cache_dir)
    protected = load_records(data_dir, spec["protected"]) if spec.get("protected") else []
    ctx = Context(model, tokenizer, preset, records, cache_dir,
                  dict(spec.get("hparams") or {}), int(spec.get("seed", 0)), protected)
    kind = KINDS.get(spec["diagnostic"])
    t0 = time.perf_counter()
    result = kind.run(ctx, spec)
    doc = {"diagnostic": name, "kind": spec["diagnostic"], "spec": spec, "ci": ci,
           "model": {"id": model_id, "preset": ctx.preset}, "records": [r["id"] for r in records],
           "seconds": time.perf_counter() - t0, "editprobe_version": __version__, "git": git_hash(), **result}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=1, default=float), encoding="utf-8")
    kind.plot(result, spec, out_dir / f"{name}.png")
    return doc

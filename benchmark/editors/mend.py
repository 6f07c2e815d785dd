"""MEND: a learned editor of gradients (Mitchell et al., ICLR 2022, "Fast Model Editing at Scale").

For each edited weight matrix W (``d_out x d_in``) the gradient of the edit loss over one sequence is a sum of
rank-one terms, ``dL/dW = sum_t delta_t u_t^T``: ``u_t`` is the matrix's input at token ``t`` and ``delta_t`` the
loss gradient at its output. MEND never forms that gradient. A small network ``g`` maps each pair to
``(u~_t, delta~_t) = g(u_t, delta_t)`` and the edit is

    W  <-  W - alpha_l * sum_t delta~_t u~_t^T                       (one learned step size alpha_l per matrix)

``g`` and the ``alpha_l`` are trained on a training split of edits (here ``training/counterfact_train.json`` of the
data folder: 10,000 CounterFact records, never an evaluation set) so that the edited model gives the new target on
a rephrasing of the edit prompt (``L_edit``, the target NLL) while its next-token distribution on an unrelated
prompt stays put (``L_loc``, KL(base || edited) over that prompt's tokens); the training loss is
``cedit * L_edit + cloc * L_loc``. The base model never trains.

What is the reference's (eric-mitchell/mend, ``algs/mend.py`` and ``config/alg/mend.yaml``; EasyEdit's LLaMA file):

* edited matrices: every MLP matrix of the last three decoder layers (from the architecture table in
  :mod:`editprobe.benchmark.editors.layers`: gate/up/down for LLaMA-like models, c_fc/c_proj for GPT-2);
* one network per matrix *shape*, shared by the matrices of that shape, with a learned per-matrix scale and shift
  inside every layer (``shared: true``, its "modes");
* ``u`` and ``delta`` standardised by running means and variances (Welford) gathered during training, frozen
  afterwards (``norm: true``); token rows whose ``u`` or ``delta`` is all zero are skipped;
* ``u`` and ``delta`` enter the network together (``combine: true``); the network is ``n_hidden + 1`` residual
  low-rank layers ``x + clamp(scale_m * (A B x + b) + shift_m, min=0)`` with ``A`` zero and ``B`` standard
  normal at the start, so the untrained editor is a plain gradient step on standardised factors; ``rank`` 1920,
  ``n_hidden`` 1;
* ``edit_lr`` 1e-4 is the initial ``alpha_l``, learned with Adam at ``lr_lr`` 1e-4; gradient clipping at 100;
  ``cedit`` 0.1, ``cloc`` 1.0; ``accumulate`` training edits per update (the reference's ``accumulate_bs`` 10).

Deviations, each forced by a two-core CPU and stated where results are shown:

* the reference trains ``g`` with Adam at lr 1e-6 for up to 100,000 iterations on a GPU; here ``train_steps``
  updates (default 100, i.e. 1,000 training edits) at lr 1e-4, so the hypernetwork is far less trained;
* the update is written ``W - alpha * ...`` as in the paper (the reference code adds ``alpha * ...`` and lets the
  learned networks take the sign);
* ``L_edit`` is read on the rephrased prompt when the training record has one, else on the edit prompt itself
  (the reference uses the rephrasing, ``data.rephrase``); ``L_loc`` on the record's neighbourhood prompt followed
  by its answer.

A trained editor is a checkpoint file (``mend.pt``): the networks, their statistics, the step sizes, the edited
matrices' names and the training settings. ``checkpoint`` names one (a file, or a folder holding ``mend.pt``, as
``editprobe train mend --out DIR`` writes); otherwise the editor looks in the cache under a key of the model and
every training setting, and trains there on first use (``train_if_missing``), saying so and how long it will take.
Training resumes after an interruption from ``partial.pt`` in the same folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest, tensor_digest
from editprobe.benchmark.editors.context import model_cache_name
from editprobe.benchmark.editors.layers import EditSite, decoder_blocks, mlp_sites, resolve_layout
from editprobe.benchmark.metrics import target_token_ids
from editprobe.paths import resolve_data_ref

CHECKPOINT = "mend.pt"
PARTIAL = "partial.pt"
FORMAT = "editprobe-mend/1"
#: hyper-parameters that do not change what training produces (where it is stored, whether it may run)
NOT_TRAINING = ("checkpoint", "train_if_missing", "cache_dir", "save_every")


@dataclass(frozen=True)
class MENDHparams:
    RANGES: ClassVar[dict] = {"rank": (1, None, False), "n_hidden": (0, None, False), "edit_lr": (0, None, True),
                              "lr": (0, None, True), "lr_lr": (0, None, False), "cedit": (0, None, False),
                              "cloc": (0, None, False), "train_steps": (1, None, False),
                              "accumulate": (1, None, False), "grad_clip": (0, None, True),
                              "save_every": (1, None, False)}

    layers: tuple[int, ...] | None = None               # None: the model's last three decoder layers
    module_templates: tuple[str, ...] | None = None     # None: every MLP matrix of the architecture table
    rank: int = 1920
    n_hidden: int = 1
    norm: bool = True
    edit_lr: float = 1e-4                               # initial alpha of every matrix
    lr: float = 1e-4                                    # Adam lr of the networks (reference: 1e-6)
    lr_lr: float = 1e-4                                 # Adam lr of the alphas
    cedit: float = 0.1
    cloc: float = 1.0
    train_steps: int = 100                              # optimiser updates
    accumulate: int = 10                                # training edits per update
    grad_clip: float = 100.0
    seed: int = 0
    train_data: str = "data:training/counterfact_train.json"  # "data:REL" = under the data folder
    checkpoint: str | None = None                       # mend.pt or a folder holding it; None: the cache
    train_if_missing: bool = True
    save_every: int = 10                                # updates between resumable snapshots
    cache_dir: str | None = None                        # None: the run's cache root


# --------------------------------------------------------------------------- the network


class LowRankResidual(nn.Module):
    """``x + clamp(scale[m] * (A (B x) + b) + shift[m], min=0)``: identity at the start (``A`` = 0)."""

    def __init__(self, dim: int, rank: int, n_modes: int, generator: torch.Generator):
        super().__init__()
        mid = min(rank, dim)
        self.A = nn.Parameter(torch.zeros(dim, mid))
        self.B = nn.Parameter(torch.randn(mid, dim, generator=generator))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        pre = (x @ self.B.T) @ self.A.T + self.bias
        return x + (pre * self.scale[mode] + self.shift[mode]).clamp(min=0)


class GradientNet(nn.Module):
    """MEND's network for one matrix shape: standardise ``u`` and ``delta``, transform them together, split."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_hidden: int, n_modes: int, norm: bool,
                 generator: torch.Generator):
        super().__init__()
        self.d_in, self.d_out, self.norm = d_in, d_out, norm
        self.layers = nn.ModuleList(LowRankResidual(d_in + d_out, rank, n_modes, generator)
                                    for _ in range(n_hidden + 1))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(d_in + d_out, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(d_in + d_out, dtype=torch.float64))

    @torch.no_grad()
    def observe(self, u: torch.Tensor, delta: torch.Tensor) -> None:
        """Fold rows into the running mean and sum of squared deviations (Chan et al.'s pairwise update, equal
        to adding the rows one by one as the reference does)."""
        x = torch.cat([u, delta], dim=1).double()
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        total = self.count + n
        diff = mean_b - self.mean
        self.mean += diff * (n / total)
        self.m2 += m2_b + diff ** 2 * (self.count * n / total)
        self.count.fill_(float(total))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.norm:
            return x
        if self.count < 2:
            raise RuntimeError("MEND's input statistics need at least two rows; the network is untrained")
        std = (self.m2 / (self.count - 1)).sqrt()
        return (x - self.mean.to(x.dtype)) / (std.to(x.dtype) + 1e-7)

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.standardise(torch.cat([u, delta], dim=1).float())
        for layer in self.layers:
            x = layer(x, mode)
        return x[:, :self.d_in], x[:, self.d_in:]


class MENDNetworks(nn.Module):
    """The networks of every edited matrix of one model, and one learned step size per matrix."""

    def __init__(self, sites: list[EditSite], hp: MENDHparams):
        super().__init__()
        generator = torch.Generator().manual_seed(hp.seed)
        self.names = [s.name for s in sites]
        self.shapes: dict[str, tuple[int, int]] = {s.name: (s.d_in, s.d_out) for s in sites}
        by_shape: dict[tuple[int, int], list[str]] = {}
        for s in sites:
            by_shape.setdefault((s.d_in, s.d_out), []).append(s.name)
        self.mode = {name: names.index(name) for names in by_shape.values() for name in names}
        self.nets = nn.ModuleDict({_shape_key(shape): GradientNet(*shape, hp.rank, hp.n_hidden, len(names), hp.norm,
                                                                  generator)
                                   for shape, names in by_shape.items()})
        self.alphas = nn.Parameter(torch.full((len(sites),), float(hp.edit_lr)))

    def net(self, name: str) -> GradientNet:
        return self.nets[_shape_key(self.shapes[name])]

    def factors(self, name: str, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha * u~, delta~)`` of one matrix: its update is ``-(delta~^T)(alpha u~)``, i.e. shape (d_out, d_in)."""
        ut, dt = self.net(name)(u, delta, self.mode[name])
        return self.alphas[self.names.index(name)] * ut, dt


def _shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


# --------------------------------------------------------------------------- gradients and edited forward passes


def _example_ids(tokenizer, prompt: str, target: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [1, P+T], labels [1, P+T])`` with labels only on the target tokens."""
    prompt_ids, target_ids = target_token_ids(tokenizer, prompt, target)
    ids = torch.tensor([prompt_ids + target_ids], device=device)
    labels = torch.tensor([[-100] * len(prompt_ids) + target_ids], device=device)
    return ids, labels


def target_nll(model, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL of the labelled tokens (each read at the position before it)."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    lab = labels[:, 1:]
    keep = lab != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(logp * keep).sum() / keep.sum()


class _SiteHooks:
    """A forward hook on every site while the context is open; subclasses say what each hook does."""

    def __init__(self, sites: list[EditSite]):
        self.sites = sites
        self._handles: list = []

    def hook_for(self, site: EditSite):
        raise NotImplementedError

    def __enter__(self):
        for site in self.sites:
            self._handles.append(site.module.register_forward_hook(self.hook_for(site)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()


class _Capture(_SiteHooks):
    """Keeps each site's input rows and output tensor, so the output gradient can be taken."""

    def __init__(self, sites: list[EditSite]):
        super().__init__(sites)
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    def hook_for(self, site: EditSite):
        def hook(module, args, output):
            self.inputs[site.name] = args[0].detach()
            self.outputs[site.name] = output
        return hook


def gradient_factors(model, tokenizer, sites: list[EditSite], requests: list[tuple[str, str]]
                     ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """For each site the rows ``(u, delta)`` of the edit-loss gradient over every request (rows with an all-zero
    ``u`` or ``delta`` dropped), and the mean edit loss before the edit. The model's weights get no ``.grad``."""
    device = sites[0].weight.device
    rows: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {s.name: [] for s in sites}
    losses = []
    flags = [(s.weight, s.weight.requires_grad) for s in sites]
    try:
        for s in sites:
            s.weight.requires_grad_(True)
        for prompt, target in requests:
            ids, labels = _example_ids(tokenizer, prompt, target, device)
            with _Capture(sites) as cap:
                loss = target_nll(model, ids, labels)
            # a request's loss is its mean target NLL; several requests are averaged
            grads = torch.autograd.grad(loss / len(requests), [cap.outputs[s.name] for s in sites])
            losses.append(float(loss.detach()))
            for s, g in zip(sites, grads):
                u = cap.inputs[s.name].reshape(-1, s.d_in).float()
                d = g.reshape(-1, s.d_out).float()
                keep = (u != 0).any(1) & (d != 0).any(1)
                rows[s.name].append((u[keep], d[keep]))
    finally:
        for w, flag in flags:
            w.requires_grad_(flag)
    out = {name: (torch.cat([u for u, _ in parts]), torch.cat([d for _, d in parts])) for name, parts in rows.items()}
    return out, sum(losses) / len(losses)


class _LowRankEdit(_SiteHooks):
    """Adds ``-(x u~^T) delta~`` to each site's output: the edited model, differentiable in the factors, without
    writing any weight (what training back-propagates through)."""

    def __init__(self, sites: list[EditSite], factors: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__(sites)
        self.factors = factors

    def hook_for(self, site: EditSite):
        au, dt = self.factors[site.name]

        def hook(module, args, output):
            return output - ((args[0].float() @ au.T) @ dt).to(output.dtype)
        return hook


def weight_updates(networks: MENDNetworks, grads: dict[str, tuple[torch.Tensor, torch.Tensor]]
                   ) -> dict[str, torch.Tensor]:
    """``dW = -alpha * delta~^T u~`` of every site, each ``(d_out, d_in)``."""
    out = {}
    for name, (u, d) in grads.items():
        au, dt = networks.factors(name, u, d)
        out[name] = -(dt.T @ au)
    return out


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainExample:
    prompt: str
    target: str
    outer: str          # where L_edit is read: the rephrasing, else the prompt
    loc_prompt: str
    loc_answer: str


def read_training_edits(path: Path) -> list[TrainExample]:
    """EasyEdit's flattened CounterFact (a JSON array of {prompt, target_new, rephrase_prompt?, locality_prompt,
    locality_ground_truth}); a record without a usable field is one error naming the file, record and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: MEND's training split is missing (the data folder is $EDITPROBE_DATA or "
                                "../shared/data; set the train_data hyper-parameter)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON array of CounterFact records")
    out = []
    for i, rec in enumerate(data):
        for key in ("prompt", "target_new", "locality_prompt", "locality_ground_truth"):
            if not isinstance(rec, dict) or not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ValueError(f"{path}: record {i}: field '{key}' must be a non-empty string")
        rephrase = rec.get("rephrase_prompt")
        outer = rephrase if isinstance(rephrase, str) and rephrase.strip() else rec["prompt"]
        out.append(TrainExample(rec["prompt"], rec["target_new"], outer, rec["locality_prompt"],
                                rec["locality_ground_truth"]))
    return out


def training_order(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def _kl(base_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(base || edited) per position, averaged over the positions."""
    base = torch.log_softmax(base_logits.float(), dim=-1)
    edited = torch.log_softmax(logits.float(), dim=-1)
    return (base.exp() * (base - edited)).sum(-1).mean()


def example_losses(model, tokenizer, sites, networks: MENDNetworks, ex: TrainExample, *, observe: bool
                   ) -> dict[str, torch.Tensor]:
    """One training edit: its gradient factors, the networks' update (kept as hooks), and ``L_edit`` on the outer
    prompt and ``L_loc`` on the neighbourhood prompt of the edited model."""
    device = sites[0].weight.device
    grads, pre = gradient_factors(model, tokenizer, sites, [(ex.prompt, ex.target)])
    if observe:
        for name, (u, d) in grads.items():
            networks.net(name).observe(u, d)
    factors = {name: networks.factors(name, u, d) for name, (u, d) in grads.items()}
    outer_ids, outer_labels = _example_ids(tokenizer, ex.outer, ex.target, device)
    loc_ids, _ = _example_ids(tokenizer, ex.loc_prompt, ex.loc_answer, device)
    with torch.no_grad():
        base_loc = model(input_ids=loc_ids).logits
    with _LowRankEdit(sites, factors):
        l_edit = target_nll(model, outer_ids, outer_labels)
        l_loc = _kl(base_loc, model(input_ids=loc_ids).logits)
    return {"edit": l_edit, "loc": l_loc, "pre": torch.tensor(pre)}


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train(model, tokenizer, hp: MENDHparams, out_dir: Path, *, progress: Callable[[str], None] | None = _stderr,
          key: str | None = None) -> Path:
    """Train MEND's networks for ``model`` into ``out_dir/mend.pt`` and return that path.

    Every ``save_every`` updates the whole state (networks, statistics, alphas, optimiser, curve) goes to
    ``out_dir/partial.pt``; a later call with the same settings resumes from it, and the result equals an
    uninterrupted run (the training order is a fixed permutation and nothing else is random). The base model's
    weights are left exactly as they were.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sites = edit_sites(model, hp)
    key = key or cache_key(model, sites, hp)
    examples = read_training_edits(resolve_data_ref(hp.train_data))
    order = training_order(len(examples), hp.seed)
    networks = MENDNetworks(sites, hp).to(sites[0].weight.device)
    opt = _optimiser(networks, hp)
    start, seconds, curve = 0, 0.0, []
    partial = out_dir / PARTIAL
    if partial.exists():
        state = torch.load(partial, map_location=sites[0].weight.device, weights_only=True)
        if state.get("key") != key:
            raise ValueError(f"{partial}: a partial MEND training for other settings (key {state.get('key')}, "
                             f"these are {key}); delete it or choose another folder")
        networks.load_state_dict(state["networks"])
        opt.load_state_dict(state["optimiser"])
        start, seconds, curve = int(state["step"]), float(state["seconds"]), list(state["curve"])
        if progress:
            progress(f"mend: resuming at update {start}/{hp.train_steps} from {partial}")
    params = dict(model.named_parameters())
    frozen = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(False)
    try:
        for step in range(start, hp.train_steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            sums = {"edit": 0.0, "loc": 0.0, "pre": 0.0}
            for j in range(hp.accumulate):
                ex = examples[order[(step * hp.accumulate + j) % len(order)]]
                losses = example_losses(model, tokenizer, sites, networks, ex, observe=True)
                ((hp.cedit * losses["edit"] + hp.cloc * losses["loc"]) / hp.accumulate).backward()
                for k in sums:
                    sums[k] += float(losses[k].detach()) / hp.accumulate
            torch.nn.utils.clip_grad_norm_(networks.parameters(), hp.grad_clip)
            opt.step()
            seconds += time.perf_counter() - t0
            curve.append([round(sums["pre"], 4), round(sums["edit"], 4), round(sums["loc"], 5)])
            done = step + 1
            if progress and (done == start + 1 or done % max(1, hp.train_steps // 20) == 0 or done == hp.train_steps):
                rate = seconds / done
                left = rate * (hp.train_steps - done)
                progress(f"mend: update {done}/{hp.train_steps}  target NLL {sums['pre']:.2f} before, "
                         f"{sums['edit']:.2f} after the edit (rephrased), locality KL {sums['loc']:.4f}  "
                         f"({rate:.1f} s/update, "
                         f"~{_duration(left)} left)")
            if done % hp.save_every == 0 and done < hp.train_steps:
                _atomic_save({"key": key, "step": done, "seconds": seconds, "curve": curve,
                              "networks": networks.state_dict(), "optimiser": opt.state_dict()}, partial)
    finally:
        for n, p in params.items():
            p.requires_grad_(frozen[n])
            p.grad = None
    path = out_dir / CHECKPOINT
    _atomic_save({"format": FORMAT, "key": key, "model": model_cache_name(model), "sites": networks.names,
                  "shapes": {n: list(s) for n, s in networks.shapes.items()}, "settings": training_settings(hp),
                  "networks": networks.state_dict(),
                  "training": {"updates": hp.train_steps, "edits": hp.train_steps * hp.accumulate,
                               "seconds": round(seconds, 1), "curve": curve}}, path)
    partial.unlink(missing_ok=True)
    return path


def _optimiser(networks: MENDNetworks, hp: MENDHparams) -> torch.optim.Optimizer:
    nets = [p for n, p in networks.named_parameters() if n != "alphas"]
    return torch.optim.Adam([{"params": nets, "lr": hp.lr}, {"params": [networks.alphas], "lr": hp.lr_lr}])


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


# --------------------------------------------------------------------------- where checkpoints live


def edit_sites(model, hp: MENDHparams) -> list[EditSite]:
    layers = hp.layers
    if layers is None:
        n = len(decoder_blocks(model, resolve_layout(model)))
        layers = tuple(range(max(0, n - 3), n))
    return [site for layer in layers for site in mlp_sites(model, layer, hp.module_templates)]


def training_settings(hp: MENDHparams) -> dict:
    return {k: v for k, v in dataclasses.asdict(hp).items() if k not in NOT_TRAINING}


def cache_key(model, sites: list[EditSite], hp: MENDHparams) -> str:
    """sha256 over the model's name, the edited matrices (names and values), every training setting and the
    training file's size and name: a checkpoint is reused only for what it was trained for."""
    data = resolve_data_ref(hp.train_data)
    h = hashlib.sha256(FORMAT.encode())
    settings = {k: v for k, v in training_settings(hp).items() if k != "train_data"}  # the file counts, not its spelling
    h.update(json.dumps({"model": model_cache_name(model), "settings": settings,
                         "data": [data.name, data.stat().st_size if data.exists() else None]},
                        sort_keys=True, default=list).encode())
    for s in sites:
        h.update(s.name.encode())
        h.update(tensor_digest(s.weight).encode())
    return h.hexdigest()[:16]


def load_checkpoint(path: Path, model, sites: list[EditSite], hp: MENDHparams) -> tuple[MENDNetworks, dict]:
    state = torch.load(path, map_location=sites[0].weight.device, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an editprobe MEND checkpoint (format {state.get('format')!r})")
    if state.get("model") != model_cache_name(model):
        raise ValueError(f"{path}: MEND networks trained for {state.get('model')!r}, not for this model "
                         f"({model_cache_name(model)!r}); train them for it with `editprobe train mend`")
    shapes = {s.name: [s.d_in, s.d_out] for s in sites}
    if state["shapes"] != shapes:
        raise ValueError(f"{path}: trained for matrices {sorted(state['shapes'])} with other shapes or names than this "
                         f"model's {sorted(shapes)}")
    arch = dataclasses.replace(hp, **{k: state["settings"][k] for k in ("rank", "n_hidden", "norm")})
    networks = MENDNetworks(sites, arch).to(sites[0].weight.device)
    networks.load_state_dict(state["networks"])
    return networks, state


class MENDEditor(Editor):
    """MEND (Mitchell et al. 2022, "Fast Model Editing at Scale"): a trained network turns the edit's gradient into the update."""

    name = "mend"
    modes = ("single", "sequential", "batch")
    row_batchable = True
    Hparams = MENDHparams

    def __init__(self, hparams=None, **overrides):
        super().__init__(hparams, **overrides)
        # per model object: the networks chosen at its first edit. The cache key hashes the edited weights, so it is
        # computed once, on the model as first handed over; later (sequential) edits change those weights.
        self._loaded: dict[int, tuple[MENDNetworks, dict]] = {}
        self.progress: Callable[[str], None] | None = _stderr
        # checked here, before any model loads: what the first edit would need
        hp = self.hparams
        if hp.checkpoint:
            path = Path(hp.checkpoint)
            if not (path / CHECKPOINT if path.is_dir() else path).is_file():
                raise FileNotFoundError(f"mend hyper-parameters: field 'checkpoint': no MEND checkpoint at {path} "
                                        "(write one with `editprobe train mend --out DIR`)")
        elif not (data := resolve_data_ref(hp.train_data)).is_file():
            # the cache key covers the training file, so without it no cached checkpoint can match either
            raise FileNotFoundError(f"mend hyper-parameters: field 'train_data': {data} does not exist (CounterFact's training split; the data folder is "
                                    "$EDITPROBE_DATA, default ../shared/data)")

    @property
    def cache_dir(self) -> Path:
        from editprobe.paths import default_cache_dir

        root = self.hparams.cache_dir or self.cache_root
        return Path(root) if root else default_cache_dir()

    def checkpoint_path(self, model, sites: list[EditSite]) -> tuple[Path, str | None]:
        """The checkpoint this editor uses for ``model`` and, when it comes from the cache, its key."""
        if self.hparams.checkpoint:
            path = Path(self.hparams.checkpoint)
            return (path / CHECKPOINT if path.is_dir() else path), None
        key = cache_key(model, sites, self.hparams)
        return self.cache_dir / "mend" / model_cache_name(model) / key / CHECKPOINT, key

    def networks(self, model, tokenizer, sites: list[EditSite]) -> tuple[MENDNetworks, dict]:
        cached = self._loaded.get(id(model))
        if cached is not None:
            return cached
        path, key = self.checkpoint_path(model, sites)
        if not path.exists():
            if key is None:
                raise FileNotFoundError(f"MEND checkpoint {path} does not exist (write one with `editprobe train "
                                        f"mend --out DIR`)")
            if not self.hparams.train_if_missing:
                raise FileNotFoundError(f"no trained MEND networks for {model_cache_name(model)} with these settings "
                                        f"(cache key {key}, {path.parent}); run `editprobe train mend` or allow "
                                        "train_if_missing")
            hp = self.hparams
            if self.progress:
                self.progress(f"mend: no trained networks for {model_cache_name(model)} with these settings yet; "
                              f"training them now ({hp.train_steps} updates x {hp.accumulate} CounterFact training "
                              f"edits, saved to {path.parent}; an interrupted training resumes). On a 2-core CPU "
                              f"SmolLM2-135M takes about {_duration(hp.train_steps * hp.accumulate * SECONDS_PER_EDIT)}"
                              "; the first update prints a measured estimate.")
            train(model, tokenizer, hp, path.parent, progress=self.progress, key=key)
        self._loaded[id(model)] = load_checkpoint(path, model, sites, self.hparams)
        return self._loaded[id(model)]

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        sites = edit_sites(model, self.hparams)
        networks, state = self.networks(model, tokenizer, sites)
        networks.eval()
        handle = EditHandle(model, [s.weight_name for s in sites])
        try:
            grads, pre = gradient_factors(model, tokenizer, sites, [(r.prompt, r.target) for r in requests])
            with torch.no_grad():
                updates = weight_updates(networks, grads)
                for s in sites:
                    s.add_(updates[s.name])
        except BaseException:
            handle.restore()
            raise
        handle.diagnostics.update(
            loss_before=round(pre, 4), checkpoint_updates=int(state["training"]["updates"]),
            delta_norm={s.weight_name: float(updates[s.name].norm()) for s in sites},
            alphas={s.weight_name: float(a) for s, a in zip(sites, networks.alphas.detach())})
        return handle


#: seconds per training edit of SmolLM2-135M measured on the 2-core CPU (0.67-0.75 with nothing else running;
#: the README gives the full training time), for the first-use message only: the first update prints the real rate
SECONDS_PER_EDIT = 0.7

__all__ = ["MENDEditor", "MENDHparams", "MENDNetworks", "GradientNet", "train", "gradient_factors",
           "weight_updates", "read_training_edits", "cache_key"]

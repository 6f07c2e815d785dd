"""``check_editor``: the contract every editprobe editor keeps, checked the same way for all of them.

The idea is scikit-learn's ``check_estimator``: one function, run on any editor (built-in, plug-in or
``easyedit:<ALG>``), that says which part of the contract an editor breaks. The runner relies on each point:

1. ``restore_after_one_edit`` - ``apply`` then ``restore`` gives back the model bit for bit (sha256 over the
   whole state dict);
2. ``restore_after_sequential_edits`` - for editors that declare the ``sequential`` mode: N edits applied one
   after another without restore, then undone newest first, give back the model bit for bit;
3. ``failed_apply_leaves_no_change`` - an ``apply`` interrupted by an error raised from inside the model's
   forward pass (at the 1st, 2nd and 5th forward call the edit makes) leaves the weights as they were;
4. ``hparams_yaml_round_trip`` - the hyper-parameters written as YAML load back (``load_hparams``, with its
   type and range checks) to the same object;
5. ``declared_modes`` - the editor's modes are among the runner's, and include ``single``;
6. ``diagnostics_are_json`` - the handle's ``diagnostics`` is a dict that ``json.dumps`` writes (it goes into
   every record's ``edit`` entry in ``samples.jsonl``).

Every check runs (a check that leaves the model changed is reported and the model is put back from a CPU copy
taken at the start, so the suite needs the model's size again in host memory); :class:`ConformanceError` lists
the failures together.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from editprobe.benchmark.editors.base import Editor, EditRequest, load_hparams, state_digest

RUNNER_MODES = ("single", "sequential", "batch")
#: forward calls (counted from the start of ``apply``) at which ``failed_apply_leaves_no_change`` raises
FAIL_AT_CALLS = (1, 2, 5)


class ConformanceError(AssertionError):
    """An editor broke part of the contract; the message lists every failed check."""


class InjectedFailure(RuntimeError):
    """Raised from inside the model's forward pass by ``failed_apply_leaves_no_change``."""


class _FailOnCall:
    """A forward pre-hook on the model that raises on its ``n``-th call (1-based)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, module, args, kwargs=None):
        self.calls += 1
        if self.calls == self.n:
            raise InjectedFailure(f"injected failure at forward call {self.n}")


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def check_editor(make_editor: Callable[[], Editor], model: torch.nn.Module, tokenizer,
                 requests: list[EditRequest], *, sequential: int = 10) -> list[str]:
    """Run the six checks on fresh editors from ``make_editor``; return the names of the checks that ran (the
    interruption check marked "(apply makes no forward call)" when no injected failure could fire), or raise
    :class:`ConformanceError` naming each one that failed. ``requests`` needs ``sequential`` entries."""
    failures: list[str] = []
    ran: list[str] = []
    before = state_digest(model)
    # a copy on the CPU, so that a check which breaks the model cannot spoil the checks after it
    snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def check(name: str, body: Callable[[], str | None]) -> None:
        ran.append(name)
        try:
            problem = body()
        except Exception as exc:  # noqa: BLE001 - any error is a failed check, reported with its type
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            failures.append(f"{name}: {problem}")
        if state_digest(model) != before:
            if not problem:
                failures.append(f"{name}: left the model changed")
            with torch.no_grad():
                model.load_state_dict(snapshot)

    editor = make_editor()
    handle_box = {}

    def one_edit():
        handle = editor.apply(model, tokenizer, [requests[0]])
        handle_box["handle"] = handle
        handle.restore()
        return None if state_digest(model) == before else "restore did not give back the original weights"

    check("restore_after_one_edit", one_edit)

    if "sequential" in editor.modes:
        def chain():
            handles = []
            try:
                for request in requests[:sequential]:
                    handles.append(editor.apply(model, tokenizer, [request]))
            finally:
                for handle in reversed(handles):
                    handle.restore()
            if len(handles) < sequential:
                return f"only {len(handles)} of {sequential} requests were given"
            return None if state_digest(model) == before else f"{sequential} edits undone newest first differ"

        check("restore_after_sequential_edits", chain)

    fired = []

    def interrupted():
        problems = []
        for n in FAIL_AT_CALLS:
            hook = _FailOnCall(n)
            removable = model.register_forward_pre_hook(hook, with_kwargs=True)
            try:
                handle = make_editor().apply(model, tokenizer, [requests[0]])
            except InjectedFailure:
                fired.append(n)
                if state_digest(model) != before:
                    problems.append(f"weights changed after a failure at forward call {n}")
                    with torch.no_grad():
                        model.load_state_dict(snapshot)
            else:  # the edit needed fewer forward calls than n: nothing was interrupted
                removable.remove()
                handle.restore()
                continue
            finally:
                removable.remove()
        return "; ".join(problems) or None

    check("failed_apply_leaves_no_change", interrupted)
    if not fired:  # an editor that never runs the model (noop, null, ike) has nothing to interrupt
        ran[-1] += " (apply makes no forward call)"

    def round_trip():
        hp = editor.hparams
        if not dataclasses.is_dataclass(hp):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "hparams.yaml"
            path.write_text(yaml.safe_dump(_jsonable(hp), sort_keys=False), encoding="utf-8")
            loaded = load_hparams(type(hp), path)
        return None if loaded == hp else f"loaded back as {loaded!r}, not {hp!r}"

    check("hparams_yaml_round_trip", round_trip)

    def modes():
        unknown = [m for m in editor.modes if m not in RUNNER_MODES]
        if unknown:
            return f"declares mode(s) the runner does not have: {', '.join(unknown)}"
        return None if "single" in editor.modes else "does not declare the single mode"

    check("declared_modes", modes)

    def diagnostics():
        handle = handle_box.get("handle")
        if handle is None:
            return "no handle (the first edit failed)"
        if not isinstance(handle.diagnostics, dict):
            return f"diagnostics is a {type(handle.diagnostics).__name__}, not a dict"
        json.dumps(handle.diagnostics)
        return None

    check("diagnostics_are_json", diagnostics)

    if failures:
        raise ConformanceError("; ".join(failures))
    return ran

"""The one registry type behind editors, estimators, diagnostics, source formats and LLM backends; the plug-in
listings and the CLI spellings shared by every subcommand."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from editprobe.cli import PLUGIN_KINDS, main
from editprobe.registry import Registry, RegistryError, import_target


class Base:
    pass


class Good(Base):
    pass


class Bad:
    pass


def _registry() -> Registry:
    reg = Registry("widget", "editprobe.test_widgets", base=Base)
    reg.register("good", f"{__name__}:Good")
    reg.register("bad", f"{__name__}:Bad")
    return reg


def test_builtins_resolve_lazily_and_are_type_checked():
    reg = _registry()
    assert reg.names() == ["good", "bad"]
    assert reg.get("good") is Good and reg.get(f"{__name__}:Good") is Good
    with pytest.raises(RegistryError, match=r"widget 'bad' \(tests.test_registry:Bad\) is not a subclass of Base"):
        reg.get("bad")
    with pytest.raises(RegistryError, match=r"^widget 'x' is not a subclass of Base$"):
        reg.add("x", Bad)


def test_unknown_names_get_one_error_format():
    reg = _registry()
    with pytest.raises(RegistryError) as err:
        reg.get("nope")
    assert str(err.value) == "unknown widget 'nope'; known: good, bad (or give package.module:Class)"
    with pytest.raises(RegistryError, match=r"^unknown widget 'no.such:Thing'; known: good, bad .*cannot import"):
        reg.get("no.such:Thing")
    with pytest.raises(RegistryError, match="has no attribute 'Missing'"):
        import_target(f"{__name__}:Missing")


def test_entry_points_of_an_installed_distribution_are_found(tmp_path, monkeypatch):
    """A third-party distribution declares ``[editprobe.test_widgets] third = tests.test_registry:Good``."""
    info = tmp_path / "thirdparty_widgets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-widgets\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[editprobe.test_widgets]\nthird = {__name__}:Good\n"
                                           f"broken = {__name__}:Missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = _registry()
    assert reg.names() == ["good", "bad", "broken", "third"]
    assert reg.get("third") is Good
    entry = {e.name: e for e in reg.entries()}["third"]
    assert entry.origin == "entry point (thirdparty-widgets)" and entry.target == f"{__name__}:Good"
    with pytest.raises(RegistryError, match="entry point 'tests.test_registry:Missing' of group "
                                            "editprobe.test_widgets failed to load"):
        reg.get("broken")


def test_prefix_names_call_their_factory():
    from editprobe.benchmark.editors import EDITORS
    from editprobe.benchmark.editors.easyedit import EasyEditEditor

    cls = EDITORS.get("easyedit:ROME")
    assert issubclass(cls, EasyEditEditor) and cls.alg == "ROME"
    assert EDITORS.get("easyedit:ROME") is cls                      # built once
    with pytest.raises(RegistryError, match=r"unknown editor 'rome2'; known: noop, null, ft, kn, ike, rome, memit, "
                                            r"alphaedit, mend, easyedit:<NAME> \(or give package.module:Class\)"):
        EDITORS.get("rome2")


@pytest.mark.parametrize("kind", sorted(PLUGIN_KINDS))
def test_every_plugin_kind_is_listed(kind):
    registry = import_target(PLUGIN_KINDS[kind][0])
    result = CliRunner().invoke(main, [kind, "list"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.splitlines()]
    assert [n for n in listed if not n.endswith(":<NAME>")] == registry.names() and registry.names()


def test_every_registry_speaks_the_same_error(tmp_path):
    from editprobe.benchmark.diagnostics import KINDS
    from editprobe.benchmark.uncertainty import build_estimator
    from editprobe.dataset_builder.llm import BACKENDS
    from editprobe.dataset_builder.sources import FORMATS

    for get, kind in ((KINDS.get, "diagnostic kind"), (FORMATS.get, "source format"), (BACKENDS.get, "LLM backend"),
                      (build_estimator, "estimator")):
        with pytest.raises(RegistryError, match=rf"^unknown {kind} 'zzz'; known: .* \(or give package\.module:"):
            get("zzz")


def test_old_option_spellings_still_work_but_are_hidden():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert "--out " in result.output and "--output-dir" not in result.output
    result = CliRunner().invoke(main, ["merge", "--help"])
    assert "--out " in result.output and "--output-dir" not in result.output
    # the alias is accepted: merge fails on the (empty) shard, not on the option
    result = CliRunner().invoke(main, ["merge", "--output-dir", "x", sys.prefix])
    assert "no such option" not in result.output.lower() and result.exit_code != 2


def test_one_spelling_per_concept_across_subcommands():
    """--out, --cache-dir, --data-dir and --model mean one thing wherever they appear."""
    helps = {name: CliRunner().invoke(main, [*name.split(), "--help"]).output
             for name in ("run", "merge", "diagnose", "build", "convert", "leaderboard build")}
    for name, text in helps.items():
        assert "--output-dir" not in text, name
        if "--cache-dir" in text:
            assert "editprobe's cache root" in text, name
        if "--data-dir" in text:
            assert "Source-data folder" in text, name
    assert all("--out" in helps[n] for n in helps)

"""One registry type for every kind of plug-in: editors, estimators, diagnostics, source formats, LLM backends.

A name resolves, first match wins, to

1. a built-in, registered as a lazy ``"package.module:attr"`` target (nothing is imported until it is used);
2. an entry point of the kind's group (``editprobe.editors``, ``editprobe.estimators``, ...), so a third-party
   package plugs in from its own ``pyproject.toml`` without a fork;
3. a ``prefix:rest`` name whose prefix is registered: the prefix's target is called with ``rest``
   (``easyedit:ROME`` builds an adapter class for EasyEdit's ROME);
4. a ``package.module:attr`` target given directly.

Whatever is loaded is checked against the kind's base class (or predicate) before it is returned, and an
unknown name is one error in one format for every kind:
``unknown editor 'x'; known: a, b, c (or give package.module:Class)``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name that resolves to nothing, or to something of the wrong kind; one sentence."""


@dataclass(frozen=True)
class Entry:
    """What ``editprobe <kind> list`` shows of one registered name."""

    name: str
    target: str
    origin: str  # "built-in" | "entry point (<distribution>)"


def import_target(target: str) -> Any:
    """``"package.module:attr"`` -> the attribute (dotted attributes allowed after the colon)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RegistryError(f"target {target!r} must look like 'package.module:attr'")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise RegistryError(f"cannot import {module!r} for {target!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"{module!r} has no attribute {attr!r} (target {target!r})") from None
    return obj


class Registry(Generic[T]):
    """Names -> plug-ins of one kind.

    ``base`` is the class a plug-in must subclass (``instance=False``) or be an instance of (``instance=True``);
    ``check`` replaces that test where the kind is a protocol; ``expected`` words it for error messages.
    """

    def __init__(self, kind: str, group: str, *, base: type | None = None, instance: bool = False,
                 check: Callable[[Any], bool] | None = None, expected: str | None = None,
                 target_hint: str = "package.module:Class"):
        if (base is None) == (check is None):
            raise TypeError("give exactly one of base= and check=")
        self.kind, self.group, self.target_hint = kind, group, target_hint
        if check is None:
            check = (lambda obj: isinstance(obj, base)) if instance else \
                (lambda obj: isinstance(obj, type) and issubclass(obj, base))
            expected = expected or (f"a {base.__name__}" if instance else f"a subclass of {base.__name__}")
        self._check, self.expected = check, expected or f"a valid {kind}"
        self._builtins: dict[str, str] = {}
        self._prefixes: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    # ----------------------------------------------------------------- registration

    def register(self, name: str, target: str) -> None:
        """Register a built-in under ``name`` as a lazy ``package.module:attr`` target."""
        if name in self._builtins:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._builtins[name] = target

    def add(self, name: str, obj: T) -> T:
        """Register an object the registering module has already defined (nothing left to load lazily)."""
        if not self._check(obj):
            raise RegistryError(f"{self.kind} {name!r} is not {self.expected}")
        where = (f"{obj.__module__}:{obj.__qualname__}" if hasattr(obj, "__qualname__")
                 else f"{type(obj).__module__} ({type(obj).__name__} {name!r})")
        self.register(name, where)
        self._loaded[name] = obj
        return obj

    def register_prefix(self, prefix: str, factory_target: str) -> None:
        """``prefix:rest`` names resolve to ``factory(rest)``; the factory is a lazy target too."""
        self._prefixes[prefix] = factory_target

    # ----------------------------------------------------------------- lookup

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Built-ins in registration order, then entry points alphabetically."""
        return [*self._builtins, *sorted(set(self._entry_points()) - set(self._builtins))]

    def entries(self) -> list[Entry]:
        eps = self._entry_points()
        out = [Entry(n, t, "built-in") for n, t in self._builtins.items()]
        for name in sorted(set(eps) - set(self._builtins)):
            dist = getattr(eps[name], "dist", None)
            out.append(Entry(name, eps[name].value, f"entry point ({dist.name if dist else self.group})"))
        out += [Entry(f"{p}:<NAME>", t, "built-in prefix") for p, t in self._prefixes.items()]
        return out

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except RegistryError:
            return False
        return True

    def unknown(self, name: str) -> RegistryError:
        known = ", ".join(self.names() + [f"{p}:<NAME>" for p in self._prefixes])
        return RegistryError(f"unknown {self.kind} {name!r}; known: {known} (or give {self.target_hint})")

    def get(self, name: str) -> T:
        """The plug-in named ``name`` (loaded once, then cached), checked against the kind's base."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtins:
            obj, where = import_target(self._builtins[name]), self._builtins[name]
        elif name in (eps := self._entry_points()):
            try:
                obj = eps[name].load()
            except Exception as exc:  # a broken third-party package: say which entry point
                raise RegistryError(f"{self.kind} {name!r}: entry point {eps[name].value!r} of group "
                                    f"{self.group} failed to load: {exc}") from exc
            where = f"entry point {eps[name].value}"
        elif name.partition(":")[0] in self._prefixes and name.partition(":")[2]:
            prefix, _, rest = name.partition(":")
            obj, where = import_target(self._prefixes[prefix])(rest), f"{self._prefixes[prefix]}({rest!r})"
        elif ":" in name:
            try:
                obj, where = import_target(name), name
            except RegistryError as exc:
                raise RegistryError(f"{self.unknown(name)}; as a target: {exc}") from None
        else:
            raise self.unknown(name)
        if not self._check(obj):
            raise RegistryError(f"{self.kind} {name!r} ({where}) is not {self.expected}")
        self._loaded[name] = obj
        return obj

    def items(self) -> Iterator[tuple[str, T]]:
        """Every named plug-in, loaded, in ``names()`` order."""
        for name in self.names():
            yield name, self.get(name)

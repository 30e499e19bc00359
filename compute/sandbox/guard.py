"""In-process layer: import allow-list, trimmed builtins and an audit hook.

This layer only makes escapes noisy and errors clear; the boundary is the OS layers
(uid, namespaces, chroot, Landlock, seccomp, rlimits). Stdlib only.
"""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "abc", "array", "base64", "binascii", "bisect", "calendar", "cmath", "collections",
        "collections.abc", "contextlib", "copy", "dataclasses", "datetime", "decimal", "difflib",
        "enum", "fractions", "functools", "hashlib", "heapq", "hmac", "html", "itertools", "json",
        "math", "numbers", "operator", "pprint", "random", "re", "statistics", "string",
        "struct", "textwrap", "time", "typing", "unicodedata", "uuid", "zlib",
        "taskworker",
        "_strptime",  # imported from C by datetime.strptime/time.strptime
    }
)
# Loaded in the zygote (before the filesystem disappears) so workers never touch the disk.
PRELOAD: tuple[str, ...] = tuple(sorted(ALLOWED_MODULES - {"taskworker"})) + (
    "_strptime", "encodings.idna", "json.decoder", "json.encoder", "traceback", "linecache",
)

# Audit events refused while user code runs (see docs/sandbox.md for the reasoning).
_DENIED_EVENTS: frozenset[str] = frozenset(
    {
        "sys._current_frames", "sys.setprofile", "sys.settrace",
        "sys.addaudithook", "code.__new__", "function.__new__", "marshal.loads",
        "marshal.load", "pickle.find_class", "ctypes.dlopen", "ctypes.dlsym", "open",
        "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill",
        "os.putenv", "os.unsetenv", "socket.__new__", "socket.connect", "socket.bind",
        "socket.getaddrinfo", "socket.gethostbyname", "subprocess.Popen",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "import",
        "builtins.input", "builtins.breakpoint", "cpython.run_command", "compile",
        "sys.excepthook", "sys.unraisablehook", "resource.setrlimit", "resource.prlimit",
    }
)
_FRAME_ATTRS = frozenset(
    {"gi_frame", "cr_frame", "ag_frame", "tb_frame", "f_back", "f_globals", "f_builtins",
     "f_locals", "f_code", "__code__", "gi_code", "cr_code", "ag_code"}
)


class SandboxPolicyError(PermissionError):
    """Raised inside the sandbox for operations the policy refuses."""


class AuditGate:
    """An audit hook that refuses dangerous events while ``active`` is true."""

    def __init__(self, stdlib_dir: str) -> None:
        self.active = False
        self.stdlib_dir = stdlib_dir

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        self.active = False  # the checks below must not re-enter the hook
        try:
            reason = self._refusal(event, args)
        finally:
            self.active = True
        if reason:
            raise SandboxPolicyError(f"{reason} is not allowed in the sandbox")

    def _refusal(self, event: str, args: tuple[Any, ...]) -> str | None:
        if event in ("object.__getattr__", "object.__setattr__", "sys._getframe"):
            if event != "sys._getframe" and args[1] not in _FRAME_ATTRS:
                return None
            # namedtuple, enum, typing and dataclasses peek at frames and code objects:
            # allow the (pre-loaded, read-only) stdlib, refuse user code.
            if sys._getframe(2).f_code.co_filename.startswith(self.stdlib_dir):
                return None
            return "sys._getframe()" if event == "sys._getframe" else f"access to {args[1]}"
        if event == "compile":
            filename = str(args[1]) if len(args) > 1 else ""
            return "compiling as a stdlib file" if filename.startswith(self.stdlib_dir) else None
        if event in _DENIED_EVENTS or event.startswith(("os.", "socket.", "ctypes.")):
            return f"operation {event!r}"
        return None


def make_import(allowed: frozenset[str], shims: Mapping[str, Any]) -> Callable[..., Any]:
    real_import = builtins.__import__

    def guarded_import(
        name: str,
        globals: Mapping[str, Any] | None = None,  # noqa: A002
        locals: Mapping[str, Any] | None = None,  # noqa: A002
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        if level != 0:
            raise SandboxPolicyError("relative imports are not allowed in the sandbox")
        if name in shims:
            return shims[name]
        if name not in allowed:
            raise SandboxPolicyError(f"import of {name!r} is not allowed in the sandbox")
        module = sys.modules.get(name)
        if module is None:
            raise SandboxPolicyError(f"module {name!r} is not available in the sandbox")
        if fromlist or "." not in name:
            return module
        return real_import(name, None, None, (), 0)

    return guarded_import


def _denied(what: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise SandboxPolicyError(f"{what} is not available in the sandbox")

    return refuse


def safe_builtins(importer: Callable[..., Any]) -> dict[str, Any]:
    """A fresh builtins dict for the user module (the real one stays untouched)."""
    table = dict(builtins.__dict__)
    for name in ("open", "input", "breakpoint", "help", "exit", "quit", "copyright",
                 "credits", "license", "__loader__", "__spec__"):
        table.pop(name, None)
    table["open"] = _denied("file access")
    table["input"] = _denied("input()")
    table["breakpoint"] = _denied("breakpoint()")
    table["__import__"] = importer
    return table


def check_args(func: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Raise TypeError if a plain function cannot take these arguments (inspect-free)."""
    if not isinstance(func, types.FunctionType):
        return  # other callables: the call itself decides
    code = func.__code__
    npos, posonly, kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    names = code.co_varnames[:npos + kwonly]
    has_varargs, has_varkw = bool(code.co_flags & 0x04), bool(code.co_flags & 0x08)
    if len(args) > npos and not has_varargs:
        raise TypeError(f"takes {npos} positional arguments but {len(args)} were given")
    bound = set(names[:min(len(args), npos)])
    for key in kwargs:
        if key in names[posonly:]:
            if key in bound:
                raise TypeError(f"got multiple values for argument {key!r}")
            bound.add(key)
        elif not has_varkw:
            raise TypeError(f"got an unexpected keyword argument {key!r}")
    ndefaults = len(func.__defaults__ or ())
    kwdefaults = func.__kwdefaults__ or {}
    missing = [n for n in names[:npos - ndefaults] if n not in bound]
    missing += [n for n in names[npos:] if n not in bound and n not in kwdefaults]
    if missing:
        raise TypeError(f"missing required argument(s): {', '.join(missing)}")

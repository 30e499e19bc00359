"""Preparing user source for the sandbox, keeping every line where it was.

The sandbox refuses most imports and ``from __future__``, and a module written as a script
has a ``__main__`` block: both are rewritten in place (stand-ins that raise ImportError only
when used, ``pass``), so a traceback still shows the user's own line numbers. Used for code a
TaskWorker registers (taskworker/worker_capture.py) and for deployed code (compute/executor.py).
"""

from __future__ import annotations

import ast


def _allowed_modules() -> frozenset[str]:
    from compute.sandbox.guard import ALLOWED_MODULES

    return ALLOWED_MODULES


def _stand_in(name: str, module: str) -> str:
    message = f"module {module!r} is not available inside the sandbox"
    return (f"{name} = type({module!r}, (), {{'__getattr__': lambda _s, _n: "
            f"(_ for _ in ()).throw(ImportError({message!r}))}})()")


def _quote_annotations(source: str, tree: ast.Module) -> str:
    """What ``from __future__ import annotations`` means (the sandbox refuses the import):
    every annotation becomes a string literal, in place, line count unchanged."""
    spans: list[tuple[int, int, int, int]] = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        for ann in found:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append((ann.lineno, ann.col_offset, ann.end_lineno, ann.end_col_offset))
    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for start, col, end, end_col in sorted(spans, reverse=True):
        first, last = lines[start - 1], lines[end - 1]
        text = b"".join([first[col:]] + lines[start:end - 1] + [last[:end_col]]) \
            if end > start else first[col:end_col]
        literal = repr(" ".join(text.decode().split())).encode() + b"\n" * (end - start)
        lines[start - 1] = first[:col] + literal + last[end_col:]
        for index in range(start, end):
            lines[index] = b""
    out = b"".join(lines).decode()
    try:
        ast.parse(out)
    except SyntaxError:
        return source
    return out


def sandbox_source(source: str) -> str:
    """``source`` with disallowed top-level imports stubbed and the main block removed,
    keeping every other line where it was (so tracebacks show the user's line numbers)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body):
        source = _quote_annotations(source, tree)
        tree = ast.parse(source)
    allowed = _allowed_modules()
    lines = source.splitlines()
    owners: dict[int, int] = {}
    for index, node in enumerate(tree.body):
        for at in range(node.lineno, (node.end_lineno or node.lineno) + 1):
            owners.setdefault(at, index)
            if owners[at] != index:
                owners[at] = -1          # two statements share a line: leave it alone
    edits: dict[int, tuple[int, str]] = {}
    for index, node in enumerate(tree.body):
        start, end = node.lineno, node.end_lineno or node.lineno
        if any(owners.get(x) != index for x in range(start, end + 1)) or node.col_offset:
            continue
        if _is_main_guard(node):
            edits[start] = (end, "pass")
        elif isinstance(node, ast.Import):
            parts = []
            for alias in node.names:
                if alias.name in allowed:
                    parts.append(f"import {alias.name}" + (f" as {alias.asname}"
                                                            if alias.asname else ""))
                elif alias.asname or "." not in alias.name:
                    parts.append(_stand_in(alias.asname or alias.name, alias.name))
                else:
                    top = alias.name.split(".")[0]
                    parts.append(_stand_in(top, top))
            edits[start] = (end, "; ".join(parts))
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            edits[start] = (end, "pass")   # only annotations changes 3.11; done above
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module not in allowed:
            names = [a for a in node.names if a.name != "*"]
            if len(names) == len(node.names):
                edits[start] = (end, "; ".join(_stand_in(a.asname or a.name, str(node.module))
                                               for a in names))
    out: list[str] = []
    skip_until = 0
    for number, line in enumerate(lines, start=1):
        if number <= skip_until:
            out.append("")
            continue
        edit = edits.get(number)
        if edit is None:
            out.append(line)
        else:
            skip_until, replacement = edit
            out.append(replacement)
    return "\n".join(out) + "\n"


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    parts = [node.test.left, *node.test.comparators]
    return (any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)
            and any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts))

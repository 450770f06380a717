#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Each source file is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
A module depends on every module it names through a `crate::` path (in a
`use` or inline), and on its `super::` paths resolved from its own place.
A module's own children (`mod x;` inside it) and `#[cfg(test)]` test
modules in separate files are not dependencies of it. Any strongly
connected group of two or more modules is reported as a cycle.

Usage: scripts/check-module-cycles.py CRATE_SRC_DIR...
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\};", re.S)


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod tests { ... }` blocks (brace matched)."""
    out, i = [], 0
    marker = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
    while True:
        m = marker.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def deps_of(module: tuple, text: str, modules: set) -> set:
    deps = set()

    def resolve(kind: str, path: list):
        base = [] if kind == "crate" else list(module[:-1])
        while path and path[0] == "super":
            path = path[1:]
            base = base[:-1]
        full = base + path
        # The longest prefix that is a module.
        for n in range(len(full), 0, -1):
            if tuple(full[:n]) in modules:
                target = tuple(full[:n])
                if target != module and target[: len(module)] != module:
                    deps.add(target)
                return

    for m in USE_GROUP_RE.finditer(text):
        for item in re.split(r"[,\s]+", m.group(2)):
            head = item.split("::")[0].strip("{} ")
            if head and head != "self":
                resolve(m.group(1), [head])
    for m in PATH_RE.finditer(text):
        resolve(m.group(1), [p for p in m.group(2).split("::") if p])
    return deps


def cycles(graph: dict) -> list:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    failed = False
    for src in map(Path, sys.argv[1:]):
        files = sorted(src.rglob("*.rs"))
        modules = {module_of(src, f): f for f in files}
        graph = {}
        for module, file in modules.items():
            text = strip_comments(strip_tests(file.read_text()))
            graph[module] = deps_of(module, text, set(modules))
        for group in cycles(graph):
            failed = True
            names = ", ".join("::".join(m) or "(root)" for m in group)
            print(f"{src}: import cycle between modules: {names}")
            for m in group:
                back = sorted("::".join(d) for d in graph[m] if d in group)
                print(f"  {'::'.join(m) or '(root)'} uses {', '.join(back)}")
    if not failed:
        print(f"no import cycles in {len(sys.argv) - 1} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate a self-contained Python module from megamerge's own sources (no second copy of the model).

The exported `modeling_*.py` must import only torch and transformers, so it cannot import megamerge.
Instead of a hand-kept duplicate, the listed megamerge modules are read with `inspect`, their
top-level definitions collected with `ast`, and only those reachable from the roots are written out,
in module order: megamerge imports are dropped (the names they bring are defined in the same file),
`module.name` references to an imported megamerge module become `name`, and imports that the
`relative` map names (the exported configuration file) become relative imports. A name that a kept
definition takes from megamerge but no listed module defines is an error naming it, so a missing
module fails at export time instead of in the user's `from_pretrained`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect


def _is_megamerge(module: str | None) -> bool:
    return module is not None and (module == "megamerge" or module.startswith("megamerge."))


class _ModuleAliasRewriter(ast.NodeTransformer):
    """`objective.merge_latent` -> `merge_latent` for megamerge modules imported by name."""

    def __init__(self, aliases: set[str]):
        self.aliases = aliases

    def visit_Attribute(self, node: ast.Attribute):
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            return ast.copy_location(ast.Name(id=node.attr, ctx=node.ctx), node)
        return node


def _defined_names(stmt: ast.stmt) -> set[str]:
    """Top-level names a statement binds or mutates (a subscript store into _TABLE counts)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
    return names


def _used_names(stmt: ast.stmt) -> set[str]:
    return {node.id for node in ast.walk(stmt) if isinstance(node, ast.Name)}


def _collect(module_names: list[str], relative: dict[str, str]):
    """-> (statements [(module, stmt)], names imported from megamerge)."""
    statements, from_megamerge = [], set()
    for name in module_names:
        tree = ast.parse(inspect.getsource(importlib.import_module(name)))
        body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
        aliases = set()
        for stmt in body:
            if isinstance(stmt, ast.ImportFrom) and _is_megamerge(stmt.module):
                if stmt.module in relative:
                    statements.append((name, ast.ImportFrom(module=relative[stmt.module], names=stmt.names,
                                                            level=1)))
                    continue
                for a in stmt.names:
                    from_megamerge.add(a.asname or a.name)
                    if inspect.ismodule(getattr(importlib.import_module(stmt.module), a.name, None)):
                        aliases.add(a.asname or a.name)
            elif isinstance(stmt, ast.Import) and any(_is_megamerge(a.name) for a in stmt.names):
                raise ValueError(f"{name}: 'import megamerge...' cannot be inlined; use 'from ... import'")
            elif not (isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"):
                statements.append((name, stmt))
        rewriter = _ModuleAliasRewriter(aliases)
        statements = [(m, rewriter.visit(s) if m == name else s) for m, s in statements]
    return statements, from_megamerge


def inline_modules(module_names: list[str], roots: list[str], relative: dict[str, str] | None = None,
                   header: str = "") -> str:
    """Source of one module holding every definition of `module_names` (dependency order) that
    `roots` reach. `relative` maps a megamerge module to the relative module its imports become."""
    statements, from_megamerge = _collect(module_names, relative or {})
    definers: dict[str, list[int]] = {}
    owner: dict[str, str] = {}
    for i, (module, stmt) in enumerate(statements):
        for n in _defined_names(stmt):
            if not isinstance(stmt, (ast.Import, ast.ImportFrom)) and owner.setdefault(n, module) != module:
                raise ValueError(f"{n!r} is defined in both {owner[n]} and {module}: "
                                 "the inlined file needs one")
            definers.setdefault(n, []).append(i)
    keep, todo, seen = set(), list(roots), set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n not in definers:
            if n in from_megamerge and not hasattr(builtins, n):
                raise ValueError(f"{n!r} comes from megamerge but none of {module_names} defines it")
            continue
        for i in definers[n]:
            if i not in keep:
                keep.add(i)
                todo.extend(_used_names(statements[i][1]))
    for i in keep:
        for node in ast.walk(statements[i][1]):
            if isinstance(node, ast.ImportFrom) and _is_megamerge(node.module):
                raise ValueError(f"{statements[i][0]}: a function-level megamerge import cannot be inlined")
    imports, body = [], []
    for i, (_, stmt) in enumerate(statements):
        if i not in keep:
            continue
        text = ast.unparse(stmt)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if text not in imports:
                imports.append(text)
        else:
            body.append(text)
    return "\n".join(
        [header, "from __future__ import annotations", "", *imports, "", "", *body]
    ).strip() + "\n"

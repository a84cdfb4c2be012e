"""The package's layering, read from the source: the library never imports `tasks` (the SeqIO layer consumes
msp_jax, never the reverse; only the command layer may reach it) and no module cites the design notes."""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "msp_jax"
# The command layer: the only code allowed to import `tasks`.
COMMAND_LAYER = (PACKAGE / "commands", PACKAGE / "cli.py")


def _modules() -> list[pathlib.Path]:
  modules = sorted(PACKAGE.rglob("*.py"))
  assert len(modules) > 40, "the msp_jax package was not found where this test expects it"
  return modules


def _imported_modules(tree: ast.AST) -> set[str]:
  """Every module an `import X` / `from X import ...` anywhere in the tree names (nested imports included)."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module)
  return names


def _in_command_layer(path: pathlib.Path) -> bool:
  return any(path == allowed or allowed in path.parents for allowed in COMMAND_LAYER)


def test_the_import_reader_sees_nested_and_from_imports():
  tree = ast.parse("def f():\n  import tasks.custom\n  from tasks import synthetic\nfrom msp_jax import files\n")
  assert {"tasks.custom", "tasks", "msp_jax"} <= _imported_modules(tree)


def test_only_the_command_layer_imports_tasks():
  offenders = []
  for path in _modules():
    if _in_command_layer(path):
      continue
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    offenders += [f"{path.relative_to(PACKAGE.parent)} imports {name}" for name in sorted(imported)
                  if name == "tasks" or name.startswith("tasks.")]
  assert not offenders, "library modules import the SeqIO layer:\n" + "\n".join(offenders)


def test_no_module_cites_the_design_notes():
  # Facts the code relies on are stated in the code or in docs/, not by pointing at DESIGN.md.
  citation = re.compile(r"\bDESIGN(\.md)?\b")
  offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
               for path in _modules()
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
               if citation.search(line)]
  assert not offenders, "modules cite DESIGN.md:\n" + "\n".join(offenders)

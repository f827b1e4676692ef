"""The one Slurm seam: no Slurm tool is started outside ``src/shopfloor/slurm/``.

Scans the source of ``src/``, ``extensions/`` and ``widgets/`` for process starts
(``subprocess.run``/``Popen``/..., ``asyncio.create_subprocess_exec``/``_shell``,
``os.exec*``/``os.system``) whose command line names a Slurm client tool, directly or through a
local variable, a ``sudo`` prefix or a path join. Docstrings, comments and job-script text are
not process starts, so they never count.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("src", "extensions", "widgets")
SEAM = ROOT / "src" / "shopfloor" / "slurm"
#: Slurm's client tools (the daemons slurmctld/slurmd are started by the embedded cluster).
SLURM_TOOLS = frozenset({
    "sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol",
    "sdiag", "sinfo", "sprio", "squeue", "sreport", "srun", "sshare", "sstat", "strigger",
})
#: Module -> functions of it that start a process.
SPAWNERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                   "getstatusoutput"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "os": {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle",
           "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
           "posix_spawnp"},
}


def _is_spawn(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.attr in SPAWNERS.get(func.value.id, ()))


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``scope`` outside the functions nested in it (those are scopes of their own)."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))


def _assignments(scope: ast.AST) -> dict[str, list[ast.expr]]:
    """Name -> every value assigned to it in ``scope`` (to follow ``cmd = [...]; run(cmd)``)."""
    found: dict[str, list[ast.expr]] = {}
    for node in _own_nodes(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None \
                and isinstance(node.target, ast.Name):
            found.setdefault(node.target.id, []).append(node.value)
    return found


def _words(expr: ast.expr, names: dict[str, list[ast.expr]], seen: frozenset[str]) -> Iterator[str]:
    """The program words a command-line expression can hold (following local names once)."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                parts = shlex.split(node.value)
            except ValueError:
                parts = node.value.split()
            yield from (Path(part).name for part in parts)
        elif isinstance(node, ast.Name) and node.id in names and node.id not in seen:
            for value in names[node.id]:
                yield from _words(value, names, seen | {node.id})


def slurm_spawns(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: tool`` for every process start in ``source`` that runs a Slurm tool."""
    tree = ast.parse(source, filename)
    found = []
    module_names = _assignments(tree)
    scopes = [tree, *(n for n in ast.walk(tree)
                      if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]
    for scope in scopes:
        names = module_names if scope is tree else {**module_names, **_assignments(scope)}
        for node in _own_nodes(scope):
            if not (isinstance(node, ast.Call) and _is_spawn(node)):
                continue
            argv = [*node.args, *(k.value for k in node.keywords if k.arg in {"args", "cmd"})]
            tools = {w for arg in argv for w in _words(arg, names, frozenset())} & SLURM_TOOLS
            found += [f"{filename}:{node.lineno}: {tool}" for tool in sorted(tools)]
    return sorted(set(found))


def _sources() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if SEAM not in path.parents:
                yield path


def test_no_slurm_tool_is_started_outside_the_seam() -> None:
    offenders = [hit for path in _sources()
                 for hit in slurm_spawns(path.read_text(), str(path.relative_to(ROOT)))]
    assert not offenders, (
        "Slurm tools run outside src/shopfloor/slurm/; use the typed methods of "
        "shopfloor.slurm.seam.Slurm (async) or SlurmSync (blocking), adding one there if "
        "needed:\n" + "\n".join(offenders))


def test_the_scan_reads_every_part_of_the_client() -> None:
    scanned = {str(path.relative_to(ROOT)) for path in _sources()}
    assert {"extensions/spawner.py", "widgets/compute.py", "src/shopfloor/ray/node.py",
            "src/shopfloor/demo/localcluster.py"} <= scanned
    assert not any(path.startswith("src/shopfloor/slurm/") for path in scanned)


@pytest.mark.parametrize("code", [
    "subprocess.run(['scancel', '-u', user], capture_output=True)",
    "subprocess.run(['/usr/bin/squeue', '-h'])",
    "asyncio.create_subprocess_exec('sudo', '-n', '-u', user, '--', 'sbatch', '--parsable')",
    "cmd = ['scontrol', 'show', 'node']\nsubprocess.Popen(cmd)",
    "def f(user):\n    argv = sudo_argv(user, ['sacctmgr', 'show', 'user'])\n"
    "    return subprocess.check_output(argv)",
    "os.system('squeue -u alice | wc -l')",
    "asyncio.create_subprocess_shell(f'sinfo -N {fmt}')",
    "subprocess.run([os.path.join(bin_dir, 'srun'), 'hostname'])",
])
def test_a_slurm_tool_started_directly_is_found(code: str) -> None:
    assert slurm_spawns(code), code


@pytest.mark.parametrize("code", [
    '"""Cancels with scancel and asks squeue."""\nsubprocess.run(["ray", "stop"])',
    "# scancel is done by the seam\nsubprocess.run(['munge', '-n'])",
    "script = '#!/bin/sh\\nsrun python -m x'\nawait slurm.sbatch(script)",
    "subprocess.run(['echo', 'the squeue-like tool'])",
    "shutil.which('scancel')",
    "await slurm.run(['scontrol', 'ping'])",
])
def test_mentions_that_start_no_slurm_tool_are_not_found(code: str) -> None:
    assert slurm_spawns(code) == [], code

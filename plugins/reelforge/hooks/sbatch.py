"""The ``sbatch`` command line and the environment block of a batch script (pure: no I/O).

:class:`SbatchOptions` is the one definition of what a job asks Slurm for; the hook, the operator and
the DAGs pass it on. Values are never quoted here: the hook's ``join_command`` quotes the whole argv.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reelforge.hooks.slurm_text import expand_array, split_throttle

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SbatchOptions:
    """What one ``sbatch`` asks for (``None``/empty: the script's ``#SBATCH`` line or Slurm's default)."""

    job_name: str | None = None
    array: str | None = None  # ``0-9`` or ``0-9%2``
    throttle: int | None = None  # max array tasks at once (overrides a ``%N`` in ``array``)
    partition: str | None = None
    time_limit: str | int | None = None
    gres: str | None = None
    cpus_per_task: int | str | None = None
    mem: str | None = None
    dependency: str | None = None
    chdir: str | None = None
    output: str | None = None
    error: str | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    def argv(self, script_path: str, *, sbatch: str = "sbatch", script_args: Sequence[str] = ()) -> list[str]:
        """The ``sbatch --parsable ...`` argv (still unquoted)."""
        argv = [sbatch, "--parsable"]
        if self.job_name:
            argv.append(f"--job-name={self.job_name}")
        if self.array:
            body, inline_throttle = split_throttle(str(self.array))
            expand_array(body)  # validate
            limit = self.throttle if self.throttle else inline_throttle
            argv.append(f"--array={body}%{int(limit)}" if limit else f"--array={body}")
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if self.time_limit not in (None, ""):
            argv.append(f"--time={self.time_limit}")
        if self.gres:
            argv.append(f"--gres={self.gres}")
        if self.cpus_per_task not in (None, ""):
            argv.append(f"--cpus-per-task={int(self.cpus_per_task)}")
        for flag, value in (("mem", self.mem), ("dependency", self.dependency), ("chdir", self.chdir),
                            ("output", self.output), ("error", self.error)):
            if value:
                argv.append(f"--{flag}={value}")
        for arg in self.extra_args or ():
            arg = str(arg)
            if not arg.startswith("-"):
                raise ValueError(f"extra sbatch argument {arg!r} is not an option (must start with '-')")
            argv.append(arg)
        return [*argv, script_path, *(str(a) for a in script_args or ())]


def build_sbatch_argv(script_path: str, *, sbatch: str = "sbatch", script_args: Sequence[str] = (),
                      **options: Any) -> list[str]:
    """``SbatchOptions(**options).argv(...)``."""
    return SbatchOptions(**options).argv(script_path, sbatch=sbatch, script_args=script_args)


def slurm_filename_literal(path: str) -> str:
    """Escape ``%`` so Slurm's ``--output`` pattern expansion leaves a literal path alone."""
    return path.replace("%", "%%")


def env_assignments(env: Mapping[str, Any]) -> list[str]:
    """``K=V`` words for ``env K=V sbatch ...`` (keys must be shell identifiers; each word is quoted later)."""
    words = []
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)):
            raise ValueError(f"environment variable name {key!r} is not a shell identifier")
        words.append(f"{key}={'' if value is None else value}")
    return words


def env_exports(env: Mapping[str, Any]) -> str:
    """``export K='value'`` lines (shlex-quoted values; keys must be shell identifiers)."""
    lines = []
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)):
            raise ValueError(f"environment variable name {key!r} is not a shell identifier")
        text = "" if value is None else str(value)
        if "\0" in text:
            raise ValueError(f"environment variable {key} contains a NUL byte")
        lines.append(f"export {key}={shlex.quote(text)}\n")
    return "".join(lines)


def inject_env(script: str, env: Mapping[str, Any] | None) -> str:
    """Insert ``export`` lines right after the script's ``#!`` / ``#SBATCH`` header block.

    sbatch reads ``#SBATCH`` directives only up to the first line that is neither blank nor a
    comment, so the exports go exactly there: the directives stay effective and the values are
    set before any command runs. This avoids ``sbatch --export=K=V``, which splits on commas.
    """
    if not script.startswith("#!"):
        raise ValueError("a batch script must start with a '#!' line")
    if not env:
        return script
    lines = script.splitlines(keepends=True)
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    i = 1
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    block = "# --- environment set by ReelForge's SlurmJobOperator ---\n" + env_exports(env) + "# ---\n"
    return "".join(lines[:i]) + block + "".join(lines[i:])

"""Tests of the deployment files, offline (no Docker engine), and readers they share.

`parse_dockerfile` reads a Dockerfile into stages of instructions the way Docker does
(continuations, comment lines, ARG and ENV expansion); `build_context` lists what
`.dockerignore` lets into the build context.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


@dataclass
class Instruction:
    keyword: str
    value: str  # its arguments, continuation lines joined (comment lines dropped, as Docker does)
    line: int

    def exec_form(self) -> list[str]:
        assert self.value.startswith("["), f"line {self.line}: {self.keyword} is not exec form"
        return list(json.loads(self.value))


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name!r} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]  # the ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions grouped by stage: `\\` continues a line; `#` lines are comments."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += raw.rstrip()[:-1]
            continue
        keyword, _, value = (pending + raw).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        elif instruction.keyword == "ARG":
            key, _, default = instruction.value.partition("=")
            args[key] = default
    return Dockerfile(args, stages)


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Docker's $NAME, ${NAME} and ${NAME:-default}."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name in variables:
            return variables[name]
        return match.group(2) or ""

    return VARIABLE.sub(value, text)


def variables_at(
    dockerfile: Dockerfile,
    stage: Stage,
    before: Instruction | None = None,
    build_args: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(ARGs, ENV) of `stage` where `before` runs (at its end when None): what a RUN sees."""
    overrides = dict(build_args or {})
    args: dict[str, str] = {}
    env = dict(base_env or {})
    for instruction in stage.instructions:
        if instruction is before:
            break
        if instruction.keyword == "ARG":
            key, has_default, default = instruction.value.partition("=")
            inherited = dockerfile.args.get(key, "")
            args[key] = overrides.get(key, default if has_default else inherited)
        elif instruction.keyword == "ENV":
            words = shlex.split(instruction.value)
            pairs = [w.partition("=")[::2] for w in words] if "=" in words[0] else [words]
            for key, raw in pairs:
                env[key] = expand(raw, {**args, **env})
    return args, env


def load() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, as words (split at ; && || | ( ) and keywords)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    command: list[str] = []
    for word in lexer:
        if word in {"&&", "||", ";", "|", "(", ")", ";;", "then", "else", "do", "fi", "done"}:
            yield command
            command = []
        else:
            command.append(word)
    yield command


def pip_installs(script: str) -> Iterator[list[str]]:
    """The arguments after `install` of every `pip install` (or `python -m pip install`)."""
    for words in shell_commands(script):
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                yield words[i + 2 :]
                break


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: * and ? stop at /, ** spans folders (none too), [...] a class."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether .dockerignore leaves `path` out: the last pattern matching it or a parent wins."""
    parts = path.split("/")
    result = False
    for negated, regex in patterns:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negated
    return result


def build_context() -> list[str]:
    """The files `docker build .` sends, as .dockerignore filters the working tree."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    cleaned = [
        (line.startswith("!"), os.path.normpath(line.lstrip("!")).lstrip("/"))
        for line in lines
        if line and not line.startswith("#")
    ]
    patterns = [(negated, dockerignore_regex(p)) for negated, p in cleaned]
    exceptions = [p for negated, p in cleaned if negated]
    files = []
    for folder, dirs, names in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [
            d
            for d in dirs
            if not ignored(prefix + d, patterns)
            or any(e.startswith(prefix + d + "/") for e in exceptions)
        ]
        files += [prefix + n for n in names if not ignored(prefix + n, patterns)]
    return sorted(files)


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply` (field validation Strict)
    refuses them: objects that list properties and keep no unknown fields get
    additionalProperties false."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k != "properties" else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out

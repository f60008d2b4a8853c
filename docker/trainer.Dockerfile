# Trainer image for GPU nodes: `torchrun --nproc_per_node=8 -m trainer.train ...`.
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t ssga-trainer .
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The distribution's python3.12 tracks security fixes; pinning its exact build would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/ssga
RUN pip install "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY ssga_io ./ssga_io
COPY schemas ./schemas
COPY pipelines ./pipelines
COPY trainer ./trainer
# Beam's gs:// and s3:// filesystems (the gcp/aws extras, the workers' Beam version), so --regions/--labels stream from a bucket.
RUN pip install . "apache-beam[gcp,aws]==2.77.0" \
    && python -c "import torch, trainer, schemas; import apache_beam.io.gcp.gcsfilesystem, apache_beam.io.aws.s3filesystem; print('ssga trainer ok', torch.__version__)"

ENTRYPOINT ["torchrun"]
CMD ["--standalone", "--nproc_per_node=gpu", "-m", "trainer.train", "--help"]

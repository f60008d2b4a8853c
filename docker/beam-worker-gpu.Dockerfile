# GPU Beam worker image for the pixel teachers (grounding_dino, owlv2) on Dataflow GPU workers
# (--sdk_container_image=<this image> with --dataflow_service_options=worker_accelerator=...;install-nvidia-driver)
# and as a Flink SDK harness on GPU nodes. Same project and pipelines as beam-worker.Dockerfile; only torch differs:
# a CUDA build, whose wheels bring the CUDA runtime libraries (the host provides only the NVIDIA driver).
# The Beam SDK base image keeps its ENTRYPOINT /opt/apache/beam/boot, which Dataflow requires.
# Build from the repository root:  docker build -f docker/beam-worker-gpu.Dockerfile -t ssga-beam-worker-gpu .
# Weights are never fetched at run time: add them in a derived image (see README, "On a cluster").
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

# The CUDA build of the wheels must not need a newer driver than the workers have: cu128 needs driver >= 570.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
WORKDIR /opt/ssga
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" --index-url "${TORCH_INDEX}" \
    && python -c "import torch; assert torch.version.cuda, 'a CPU build of torch in the GPU image'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
COPY pyproject.toml README.md ./
COPY ssga_io ./ssga_io
COPY schemas ./schemas
COPY pipelines ./pipelines
COPY trainer ./trainer
# torch is already there (==2.14.1 is satisfied by the +cuXXX build), so pip keeps the CUDA one.
RUN pip install --no-cache-dir . \
    && python -c "import apache_beam, spacy, torch, transformers, pipelines, schemas; from pipelines.stages.phrases import default_spacy_model as m; spacy.load(m()); assert torch.version.cuda; print('ssga GPU worker ok, spaCy', m(), 'torch', torch.__version__)"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Beam worker image for the label pipelines: use as Dataflow's --sdk_container_image and as the
# Flink SDK harness (--environment_type=DOCKER --environment_config=<this image>).
# The Beam SDK base image keeps its ENTRYPOINT /opt/apache/beam/boot, which Dataflow requires.
# Build from the repository root:  docker build -f docker/beam-worker.Dockerfile -t ssga-beam-worker .
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

WORKDIR /opt/ssga
# CPU torch keeps the image small; GPU teacher workers use docker/beam-worker-gpu.Dockerfile.
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY ssga_io ./ssga_io
COPY schemas ./schemas
COPY pipelines ./pipelines
COPY trainer ./trainer
RUN pip install --no-cache-dir . \
    && python -c "import apache_beam, spacy, pipelines, schemas; from pipelines.stages.phrases import default_spacy_model as m; spacy.load(m()); print('ssga worker ok, spaCy', m())"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

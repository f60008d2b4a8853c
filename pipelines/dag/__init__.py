"""The DAG orchestrator (``python -m pipelines.dag``): stages.py (config, regions, labels) → pretrain.py → demo.py (summary, demo); command.py is the CLI."""
from pipelines import cli  # noqa: F401, I001 - first: quiets Beam's import-time log lines
from pipelines.dag.stages import DAG_FILE, DagConfig, label_config, labels_dag, preflight, regions_stage  # noqa: F401
from pipelines.dag.pretrain import TERMS, loss_summary, pretrain_fingerprint, pretrain_stage  # noqa: F401
from pipelines.dag.demo import run_demo, summary  # noqa: F401
from pipelines.dag.command import main, parse_args  # noqa: F401

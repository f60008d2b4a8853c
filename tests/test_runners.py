"""The label DAG on a second engine: Beam's PortableRunner (embedded job server, the portability
layer Flink and Dataflow runner v2 use) and Beam's DaskRunner on a ``dask.distributed`` LocalCluster.

Both: label shards byte-identical to the DirectRunner's. Dask: Beam 2.77's own DaskRunner cannot run
the label DAG; three defects of ``apache_beam/runners/dask`` stop it, each pinned below by a strict
xfail on Beam's runner (so that a Beam upgrade that fixes one is noticed) and tested passing on this
project's runner, :mod:`pipelines.runners.dask`, which fixes them:

1. ``dask_runner.py`` computes only the bag of the *last* applied transform
   (``dask.optimize(list(bags.values())[-1])``): every other sink (the DAG has a dozen) never runs;
2. ``transform_evaluator.ParDo`` returns one bag with every tag's outputs, and every output
   PCollection of a multi-output ParDo (``with_outputs``/``TaggedOutput``, how dead letters are split
   off) reads that whole bag: records and dead letters mix;
3. ``apply_dofn_to_bundle`` collects a bundle's outputs *before* ``finish_bundle`` runs, so what a DoFn
   emits there is lost: ``BatchElements`` (RunInference's batching) emits its last batch there.

What works on Beam's, a multi-process map → GroupByKey → map, is tested on both. On ours also: the
label DAG and region ingest with bad input (every stage file, dead letters included, byte-identical to
the DirectRunner's), side inputs, a shared upstream step running once, and one-line refusals.
"""
import hashlib
import logging
from pathlib import Path

import pytest

from label_fixtures import make_corpus
from pipelines.label_pipeline import LabelConfig, run_labels
from schemas.manifest import DEAD_LETTER_NAME, MANIFEST_NAME, reconciles

pytestmark = pytest.mark.slow
BEAM_DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"
SSGA_DASK = "pipelines.runners.dask.DaskRunner"
# Each defect test runs on both: strict xfail on Beam's runner, pass on ours.
BOTH = pytest.mark.parametrize("runner", [
    pytest.param(BEAM_DASK, id="beam", marks=pytest.mark.xfail(strict=True, reason="a defect of Beam 2.77's DaskRunner (module docstring)")),
    pytest.param(SSGA_DASK, id="ssga"),
])


def _cfg(c, out):
    return LabelConfig(captions=str(c["captions"]), regions=str(c["regions"]), out=str(out), teacher="simulated",
                       teacher_args={"miss_rate": "0.3"}, flickr30k=str(c["flickr30k"]))


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(directory).glob("labels-*.tar"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("runners")
    c = make_corpus(root / "corpus", num_images=8, num_shards=2)
    direct = run_labels(_cfg(c, root / "direct"), ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    return c, root, direct


def test_portable_runner_label_shards_are_byte_identical_to_the_direct_runners(corpus):
    c, root, direct = corpus
    portable = run_labels(_cfg(c, root / "portable"), ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"])
    assert portable["labels"]["fingerprint"] == direct["labels"]["fingerprint"]
    for stage in ("phrases", "teacher", "labels"):
        assert portable[stage]["counts"] == direct[stage]["counts"]
    shards = _digests(direct["labels"]["dir"])
    assert len(shards) == 2 and _digests(portable["labels"]["dir"]) == shards


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    # silence_logs: the in-process scheduler would log at INFO into a capture stream an earlier test closed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as cl:
        yield cl
        while True:  # Beam's runner never closes its clients: close them before the cluster goes, or they retry to connect
            try:
                distributed.default_client().close()
            except ValueError:
                break


def _dask(cluster, runner):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    return beam.Pipeline(options=PipelineOptions([f"--runner={runner}", f"--dask_client_address={cluster.scheduler_address}"]))


@pytest.mark.parametrize("runner", [BEAM_DASK, SSGA_DASK], ids=["beam", "ssga"])
def test_dask_runner_runs_a_keyed_aggregation_on_two_worker_processes(cluster, corpus, tmp_path, runner):
    import os

    import apache_beam as beam

    c, _, _ = corpus
    lines = [ln for ln in Path(c["captions"]).read_text().splitlines() if ln.strip()]
    out = tmp_path / "counts"
    out.mkdir()

    def write(kv):  # a side effect per key, from whichever worker process holds it
        (out / f"{kv[0]}.txt").write_text(f"{kv[1]} {os.getpid()}\n")
        return kv

    with _dask(cluster, runner) as p:
        _ = (p | beam.Create(lines) | beam.Map(lambda ln: (Path(ln.split("\t")[-1]).stem, 1))
             | beam.GroupByKey() | beam.Map(lambda kv: (kv[0], sum(kv[1]))) | beam.Map(write))
    got = {f.stem: int(f.read_text().split()[0]) for f in out.glob("*.txt")}
    expected: dict[str, int] = {}
    for ln in lines:
        k = Path(ln.split("\t")[-1]).stem
        expected[k] = expected.get(k, 0) + 1
    assert got == expected
    pids = {int(f.read_text().split()[1]) for f in out.glob("*.txt")}
    assert os.getpid() not in pids  # ran in the workers
    if runner == SSGA_DASK:  # GroupByKey spreads the keys over the cluster: both worker processes wrote
        assert len(pids) == 2


@BOTH
def test_dask_runner_runs_every_sink(cluster, tmp_path, runner):
    import apache_beam as beam

    with _dask(cluster, runner) as p:
        nums = p | beam.Create([1, 2, 3])
        _ = nums | "A" >> beam.Map(lambda x: (tmp_path / f"a{x}").write_text("a"))
        _ = nums | "B" >> beam.Map(lambda x: (tmp_path / f"b{x}").write_text("b"))
    assert len(list(tmp_path.glob("a*"))) == 3 and len(list(tmp_path.glob("b*"))) == 3


@BOTH
def test_dask_runner_routes_tagged_outputs(cluster, tmp_path, runner):
    import apache_beam as beam

    def split(x):
        yield x if x % 2 else beam.pvalue.TaggedOutput("even", x)

    with _dask(cluster, runner) as p:
        parts = p | beam.Create([1, 2, 3, 4]) | beam.FlatMap(split).with_outputs("even", main="odd")
        _ = parts.even | beam.Map(lambda x: (tmp_path / f"even-{x}").write_text(""))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["even-2", "even-4"]


@BOTH
def test_dask_runner_keeps_finish_bundle_outputs(cluster, tmp_path, runner):
    import apache_beam as beam

    with _dask(cluster, runner) as p:
        _ = (p | beam.Create(list(range(10))) | beam.BatchElements(min_batch_size=4, max_batch_size=4)
             | beam.Map(lambda b: (tmp_path / f"batch-{min(b)}").write_text(str(len(b)))))
    assert sum(int(f.read_text()) for f in tmp_path.iterdir()) == 10


def test_ssga_dask_runner_side_inputs_and_empty_combines(cluster, tmp_path):
    """A side input reaches every task whole; a global combine of an empty collection still gives its default (CombineGlobally's side input)."""
    import apache_beam as beam

    with _dask(cluster, SSGA_DASK) as p:
        nums = p | "Nums" >> beam.Create(list(range(20)))
        total = nums | "Sum" >> beam.CombineGlobally(sum)
        empty = (p | "None" >> beam.Create([])) | "Count" >> beam.combiners.Count.Globally()
        _ = nums | "Share" >> beam.Map(lambda x, t, e: (tmp_path / f"n{x}").write_text(f"{x / t} {e}"),
                                       beam.pvalue.AsSingleton(total), beam.pvalue.AsSingleton(empty))
    got = sorted(float(f.read_text().split()[0]) for f in tmp_path.iterdir())
    assert got == [x / 190 for x in range(20)]
    assert {f.read_text().split()[1] for f in tmp_path.iterdir()} == {"0"}


def test_ssga_dask_runner_runs_a_shared_upstream_step_once(cluster, tmp_path):
    """A step feeding several sinks and a side input runs once per element (dask.bag's graph fusion would copy it per sink)."""
    import apache_beam as beam

    log = tmp_path / "calls"

    def step(x):
        with open(log, "a") as f:
            f.write(f"{x}\n")
        return x

    with _dask(cluster, SSGA_DASK) as p:
        nums = p | beam.Create(list(range(6))) | "Step" >> beam.Map(step)
        count = nums | "Count" >> beam.combiners.Count.Globally()
        _ = nums | "A" >> beam.Map(lambda x, n: (tmp_path / f"a{x}").write_text(str(n)), beam.pvalue.AsSingleton(count))
        _ = nums | "B" >> beam.Map(lambda x: (tmp_path / f"b{x}").write_text(""))
        _ = (nums | "K" >> beam.Map(lambda x: (x % 2, x)) | beam.GroupByKey()
             | "C" >> beam.MapTuple(lambda k, xs: (tmp_path / f"c{k}").write_text(str(sorted(xs)))))
    assert sorted(int(x) for x in log.read_text().split()) == list(range(6))
    assert {(tmp_path / f"a{x}").read_text() for x in range(6)} == {"6"} and len(list(tmp_path.glob("b*"))) == 6
    assert (tmp_path / "c0").read_text() == "[0, 2, 4]" and (tmp_path / "c1").read_text() == "[1, 3, 5]"


def test_ssga_dask_runner_refuses_what_it_cannot_run(cluster):
    import apache_beam as beam
    from apache_beam.transforms import window

    from pipelines.runners.dask import UnsupportedByDask

    with pytest.raises(UnsupportedByDask, match="Windows.*FixedWindows.*global window only"):
        with _dask(cluster, SSGA_DASK) as p:
            _ = p | beam.Create([1, 2]) | "Windows" >> beam.WindowInto(window.FixedWindows(10)) | beam.Map(print)


def test_a_dofn_that_fails_fails_the_run(cluster):
    import apache_beam as beam

    def boom(x):
        raise ValueError(f"bad record {x}")

    with pytest.raises(ValueError, match="bad record"):
        with _dask(cluster, SSGA_DASK) as p:
            _ = p | beam.Create([1]) | beam.Map(boom)


def test_runner_flag_picks_the_fixed_dask_runner_and_refuses_beams():
    from pipelines.beam_options import pipeline_args
    from pipelines.cli import UserError

    for given in (["--runner=DaskRunner"], ["--runner", "dask"], ["--runner=daskrunner"]):
        args = pipeline_args(given + ["--dask_client_address=tcp://h:8786"])
        assert f"--runner={SSGA_DASK}" in args and "--dask_client_address=tcp://h:8786" in args
    with pytest.raises(UserError, match="loses every sink but the last.*--runner=DaskRunner"):
        pipeline_args([f"--runner={BEAM_DASK}"])


def test_label_dag_on_the_dask_runner_matches_the_direct_runner(cluster, corpus):
    """Every stage's output, dead letters included, byte-identical to the DirectRunner's; the manifests reconcile."""
    c, root, direct = corpus
    dask = run_labels(_cfg(c, root / "dask"), ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
    assert dask["labels"]["fingerprint"] == direct["labels"]["fingerprint"]
    for stage in ("phrases", "teacher", "labels"):
        assert dask[stage]["ran"] and reconciles(dask[stage]["counts"])
        assert dask[stage]["counts"] == direct[stage]["counts"]
        assert _files(dask[stage]["dir"]) == _files(direct[stage]["dir"]), stage
    # the corpus's bad input (a malformed TSV row, a caption without a noun phrase, an image not in the
    # region source) went to dead letters on the cluster too
    assert dask["phrases"]["counts"]["rejected"] == 2 and dask["teacher"]["counts"]["rejected"] >= 2
    dead = (Path(dask["teacher"]["dir"]) / DEAD_LETTER_NAME).read_text()
    assert f"{c['missing']}#0" in dead and "not in the region source" in dead
    shards = _digests(direct["labels"]["dir"])
    assert len(shards) == 2 and _digests(dask["labels"]["dir"]) == shards


def _files(directory):
    """Every output file of a stage directory (shards, dead letters, counts, stats), by digest; the manifest holds wall time, so not it."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(directory).iterdir()) if p.is_file() and p.name != MANIFEST_NAME}


def test_region_ingest_on_the_dask_runner_matches_the_direct_runner(cluster, tmp_path):
    """Region ingest (the DAG's first stage) on the cluster: shards, dead letters and counts as on the DirectRunner."""
    from pipelines.regions import run_regions
    from pipelines.synthetic import generate

    generate(tmp_path / "src", num_images=12, seed=3, feature_dim=8)
    lines = (tmp_path / "src" / "regions.tsv").read_text().splitlines(keepends=True)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("".join(lines[:5] + ["not a region row\n", lines[1]] + lines[5:]))  # a malformed row and a duplicate id
    direct = run_regions(tsv=tsv, out_dir=tmp_path / "direct", num_shards=3)
    dask = run_regions(tsv=tsv, out_dir=tmp_path / "dask", num_shards=3,
                       pipeline_args=["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
    assert dask["counts"] == direct["counts"] == {"in": 14, "out": 12, "rejected": 2} and reconciles(dask["counts"])
    assert _files(tmp_path / "dask") == _files(tmp_path / "direct")


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    import socket

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.cli import UserError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = PipelineOptions([f"--runner={SSGA_DASK}", f"--dask_client_address=tcp://127.0.0.1:{port}", "--dask_connection_timeout=2"])
    with pytest.raises(UserError, match=f"127.0.0.1:{port}: no Dask scheduler answered"):
        with beam.Pipeline(options=opts) as p:
            _ = p | beam.Create([1]) | beam.Map(print)

"""Beam's DaskRunner (apache-beam 2.77) with the three defects that stop it running the label DAG fixed.

    --runner=DaskRunner --dask_client_address=tcp://SCHEDULER:8786   # or --runner=dask; see pipelines.beam_options

:mod:`pipelines.beam_options` maps ``DaskRunner``/``dask`` to :class:`DaskRunner` here (Beam itself would
pick its own). Beam's runner translates each transform into a ``dask.bag`` operation; this one keeps its
options (``--dask_client_address``, ``--dask_npartitions``, ...) and its transform overrides, and differs in:

1. **every sink runs**: Beam's computes only the bag of the last applied transform, so every other
   branch of the graph (the label DAG has a dozen sinks) silently never runs. Here every PCollection
   that no transform consumes is computed, in one ``client.compute`` call (shared upstream tasks run once),
   and only a count per partition comes back to the client.
2. **outputs are routed by tag**: Beam's ParDo returns one bag with every tag's outputs and each output
   PCollection reads all of it. Here a multi-output ParDo's bag holds ``(tag, value)`` pairs and each
   output PCollection is the bag of its own tag; bags are keyed by PCollection, not by producer.
3. **finish_bundle outputs are kept**: Beam's collects a bundle's outputs before ``finish_bundle`` runs
   (``BatchElements`` emits its last batch there). Here they are collected after it.

Also: a DoFn instance is set up once per worker process and reused across bundles (Beam's sets up and
tears down a DoFn per partition: a model loaded per bundle); side inputs reach a task as a computed
dependency instead of a nested ``compute`` inside a worker; ``Reshuffle`` and ``GroupByKey`` spread a
collection over the cluster's threads (Beam's ``Reshuffle`` is a no-op, so a file read by one task stays
in one partition); ``Read`` of a bounded source and ``Impulse`` are translated. What it cannot run is
refused by name when the graph is translated, before anything runs: windowing other than the global
window, stateful and splittable DoFns, unbounded sources, any other primitive.
"""
from __future__ import annotations

import itertools
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.io.iobase import BoundedSource
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunnerResult
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupAlsoByWindow, _GroupByKeyOnly, _Read, _Reshuffle, dask_overrides
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows

from pipelines.cli import UserError

log = logging.getLogger(__name__)

RUNNER_PATH = "pipelines.runners.dask.DaskRunner"
BEAM_RUNNER_PATH = "apache_beam.runners.dask.dask_runner.DaskRunner"
_SOURCE_BUNDLE_BYTES = 64 << 20  # Read: a bounded source is split into bundles of about this size


class UnsupportedByDask(NotImplementedError):
    """The pipeline uses something this runner cannot run; the message names the transform."""


def _windowed(value: Any):
    return GlobalWindows.windowed_value(value)


# --- worker side: one bundle (= one dask partition) through a pooled DoFn invoker ---------------------


@dataclass(frozen=True)
class _DoFnSpec:
    """What a worker needs to run a ParDo: the DoFn and its arguments pickled by Beam's pickler."""

    run_id: str  # DoFn instances (and the side inputs baked into them) are reused within one run only
    label: str
    payload: bytes  # pickler.dumps((fn, args, kwargs, [(view class, view options)] of the side inputs))
    tags: tuple  # output tags: None (main) and the declared additional ones, in output order

    @property
    def key(self) -> tuple[str, str]:
        return self.run_id, self.label


class _Receivers(dict):
    """Tag → receiver; every declared tag appends ``(tag, value)`` to ``out``, undeclared tags are dropped (as Beam's runners do)."""

    def __init__(self, out: list, declared: Iterable):
        super().__init__()
        for tag in declared:
            self[tag] = _Collect(tag, out)

    def __missing__(self, tag):
        return _Drop()


class _Collect(Receiver):
    def __init__(self, tag, out: list):
        self.tag, self.out = tag, out

    def receive(self, windowed_value):
        self.out.append((self.tag, windowed_value.value))


class _Drop(Receiver):
    def receive(self, windowed_value):
        pass


class _Bundler:
    """One DoFn instance, set up once, that runs bundles."""

    def __init__(self, spec: _DoFnSpec, side_values: list[list]):
        fn, args, kwargs, views = pickler.loads(spec.payload)
        self.out: list = []
        receivers = _Receivers(self.out, spec.tags)
        handler = _OutputHandler(
            window_fn=GlobalWindows(), main_receivers=receivers[None], tagged_receivers=receivers, per_element_output_counter=None,
            output_batch_converter=None, process_yields_batches=False, process_batch_yields_elements=False,
        )
        sides = [SideInputMap(view, options, [_windowed(v) for v in values]) for (view, options), values in zip(views, side_values)]
        self.invoker = DoFnInvoker.create_invoker(
            DoFnSignature(fn), handler, context=DoFnContext(spec.label, state=None), side_inputs=sides, input_args=args,
            input_kwargs=kwargs, user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
        )
        self.invoker.invoke_setup()

    def bundle(self, items: Iterable) -> list:
        self.out.clear()
        self.invoker.invoke_start_bundle()
        for item in items:
            self.invoker.invoke_process(_windowed(item))
        self.invoker.invoke_finish_bundle()  # what it emits lands in self.out too (defect 3)
        out, self.out[:] = list(self.out), []
        return out

    def teardown(self) -> None:
        try:
            self.invoker.invoke_teardown()
        except Exception:  # noqa: BLE001 - teardown is best effort, as in Beam
            log.warning("teardown of a DoFn failed", exc_info=True)


_POOL_LOCK = threading.Lock()
_POOL: dict[tuple[str, str], list[_Bundler]] = {}  # idle DoFn instances of this worker process


def _borrow(spec: _DoFnSpec, side_values: list[list]) -> _Bundler:
    stale: list[_Bundler] = []
    with _POOL_LOCK:
        for key in [k for k in _POOL if k[0] != spec.run_id]:  # an earlier run's DoFns (and models) are released
            stale.extend(_POOL.pop(key))
        idle = _POOL.get(spec.key)
        bundler = idle.pop() if idle else None
    for b in stale:
        b.teardown()
    return bundler or _Bundler(spec, side_values)  # set up outside the lock: loading a model takes seconds


def _give_back(spec: _DoFnSpec, bundler: _Bundler) -> None:
    with _POOL_LOCK:
        _POOL.setdefault(spec.key, []).append(bundler)


def _run_bundle(items: Iterable, spec: _DoFnSpec, *side_values: list) -> list:
    """A dask partition through the DoFn: ``(tag, value)`` pairs when it has several outputs, else values."""
    bundler = _borrow(spec, list(side_values))
    try:
        out = bundler.bundle(items)
    except BaseException:
        bundler.teardown()  # a DoFn that failed mid-bundle is not reused
        raise
    _give_back(spec, bundler)
    return out if len(spec.tags) > 1 else [v for _, v in out]


def _select(pairs: Iterable, tag) -> list:
    return [v for t, v in pairs if t == tag]


def _read_bundles(bundles: Iterable) -> list:
    out: list = []
    for b in bundles:
        out.extend(b.source.read(b.source.get_range_tracker(b.start_position, b.stop_position)))
    return out


def _key(kv):
    return kv[0]


def _group(item):
    key, values = item
    return key, [kv[1].value for kv in values]  # ReifyWindows made each value a WindowedValue


def _as_list(part: Iterable) -> list:
    return list(part)


def _concat(parts: Iterable[list]) -> list:
    return list(itertools.chain.from_iterable(parts))


def _count(part: Iterable) -> int:
    return sum(1 for _ in part)


# --- client side: the pipeline as dask bags --------------------------------------------------------


class _BagVisitor(PipelineVisitor):
    """Every leaf transform → dask bags, one per output PCollection (keyed by the PCollection, so tags route)."""

    def __init__(self, run_id: str, bag_kwargs: dict, parallelism: int):
        self.run_id, self.bag_kwargs, self.parallelism = run_id, bag_kwargs, max(1, parallelism)
        self.bags: dict[pvalue.PValue, Any] = {}
        self.consumed: set = set()

    def visit_transform(self, node: AppliedPTransform) -> None:
        for pc in node.outputs.values():
            if isinstance(pc, pvalue.PCollection) and not isinstance(pc.windowing.windowfn, GlobalWindows):
                raise UnsupportedByDask(f"{node.full_label}: windowing {type(pc.windowing.windowfn).__name__} is not supported by "
                                        f"{RUNNER_PATH} (global window only; it runs batch pipelines)")
        inputs = [pc for pc in node.inputs if not isinstance(pc, pvalue.PBegin)]
        self.consumed.update(inputs)
        self.consumed.update(si.pvalue for si in node.side_inputs)
        bags = [self.bags[pc] for pc in inputs]
        t = node.transform
        if isinstance(t, _Create):
            out = self._create(list(t.values))
        elif isinstance(t, beam.Impulse):
            out = self._create([b""])
        elif isinstance(t, _Read):
            out = self._read(node, t.source)
        elif isinstance(t, _Reshuffle):
            out = self._spread(bags[0])
        elif isinstance(t, _GroupByKeyOnly):
            out = self._spread(bags[0]).groupby(_key).map(_group)
        elif isinstance(t, _GroupAlsoByWindow):
            out = bags[0]  # the global window only: the grouped values are the values of the one window
        elif isinstance(t, _Flatten):
            out = db.concat(bags) if bags else self._create([])
        elif isinstance(t, beam.ParDo):
            self._pardo(node, bags[0])
            return
        else:
            raise UnsupportedByDask(f"{node.full_label}: {type(t).__name__} is not supported by {RUNNER_PATH}")
        for pc in node.outputs.values():
            self.bags[pc] = out

    def _create(self, items: list):
        kw = dict(self.bag_kwargs) or {"npartitions": max(1, min(len(items), self.parallelism))}
        return db.from_sequence(items, **kw)

    def _spread(self, bag):
        """At least one partition per worker thread: a collection read by one task is split across the cluster."""
        return bag.repartition(npartitions=self.parallelism) if bag.npartitions < self.parallelism else bag

    def _read(self, node: AppliedPTransform, source):
        if not isinstance(source, BoundedSource):
            raise UnsupportedByDask(f"{node.full_label}: {type(source).__name__} is not a bounded source; {RUNNER_PATH} runs batch pipelines")
        return self._create(list(source.split(desired_bundle_size=_SOURCE_BUNDLE_BYTES))).map_partitions(_read_bundles)

    def _pardo(self, node: AppliedPTransform, bag) -> None:
        t = node.transform
        sig = DoFnSignature(t.fn)
        if sig.is_stateful_dofn() or sig.is_splittable_dofn():
            raise UnsupportedByDask(f"{node.full_label}: stateful and splittable DoFns are not supported by {RUNNER_PATH}")
        tags = (None, *[tag for tag in node.outputs if tag is not None])
        views = [(type(si), si._view_options()) for si in node.side_inputs]
        spec = _DoFnSpec(self.run_id, node.full_label, pickler.dumps((t.fn, t.args, t.kwargs, views)), tags)
        # A side input is a dependency computed before the task, passed whole (not a bag zipped partition-wise),
        # as an unoptimised Delayed: an Item's default to_delayed() fuses its upstream graph under new keys, so
        # everything upstream of a side input would run twice.
        sides = [self.bags[si.pvalue].reduction(_as_list, _concat).to_delayed(optimize_graph=False) for si in node.side_inputs]
        out = bag.map_partitions(_run_bundle, spec, *sides)
        if len(tags) == 1:
            self.bags[node.outputs[None]] = out
            return
        for tag in tags:  # defect 2: each output PCollection reads its own tag
            if tag in node.outputs:
                self.bags[node.outputs[tag]] = out.map_partitions(_select, tag)

    def sinks(self) -> list:
        """Bags of the PCollections that nothing consumes: computing them runs every branch."""
        return [bag for pc, bag in self.bags.items() if pc not in self.consumed]


class DaskRunner(BeamDaskRunner):
    """Executes a batch pipeline on a ``dask.distributed`` cluster (``--dask_client_address``; default a local cluster)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        try:
            client = ddist.Client(**dask_options)
        except (OSError, TimeoutError) as e:  # an unreachable scheduler: the user's address, one line
            where = dask_options.get("address") or dask_options.get("scheduler_file") or "a local cluster"
            raise UserError(f"--dask_client_address {where}: no Dask scheduler answered ({e}); start one with "
                            "`dask scheduler` (and workers with `dask worker ADDRESS`) or fix the address") from e
        try:
            pipeline.replace_all(dask_overrides())
            threads = sum(client.nthreads().values()) or 1
            visitor = _BagVisitor(uuid.uuid4().hex, bag_kwargs, bag_kwargs.get("npartitions") or threads)
            pipeline.visit(visitor)
            counts = [bag.reduction(_count, sum) for bag in visitor.sinks()]  # only a count per sink comes back
            # Not through dask.bag's graph optimisation: its fusion gives each sink its own copy of a shared
            # upstream task (a file read, a model's inference), which then runs once per sink.
            futures = client.compute(counts, optimize_graph=False)
        except BaseException:
            client.close()
            raise
        return _Result(client, futures)


class _Result(DaskRunnerResult):
    """Beam's result, plus: the client is closed once the run ends (a local cluster it started goes with it)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state != PipelineState.RUNNING:
                self.client.close()

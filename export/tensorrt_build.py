"""``lgfa build-engines DIR``: TensorRT 10 engines for this GPU, built into a bundle.

Per graph: parse the ONNX file, one optimisation profile from the graph's declared batch range,
build with a persistent timing cache and record the engine in the manifest under ``engines``. An
engine is identified by its graph file's sha256, the TensorRT version, the GPU (name and compute
capability), the precision and the profile; a matching engine already present is kept, not
rebuilt. The timing cache is kept per GPU name and TensorRT version; a cache TensorRT refuses is
replaced by a fresh one.

Precision is explicit. FP32 engines are built with TF32 off, so they compute in FP32. ``--fp16``
builds from the bundle's FP16 graph when it has one, as a strongly typed network, so that the FP32
statistics and normalisations the export kept stay FP32; from an FP32 graph it sets the builder's
FP16 flag and constrains (``OBEY_PRECISION_CONSTRAINTS``) the statistics, reductions and
normalisations, and everything computed from them alone, to FP32: the rule of ``export/fp16.py``.
The synthesis engine gets one more output, ``frames``: the uint8 BGR conversion of its image, so
that the runtime converts on the device and copies 3 bytes a pixel. TensorRT and cuda-python are
imported only when the command runs.
"""
from __future__ import annotations

import argparse
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lgfa_deploy.atomic import write_bytes_atomic
from lgfa_deploy.backends.tensorrt_runtime import (
    FRAMES_OUTPUT,
    INSTALL_HINT,
    Cuda,
    Gpu,
    find_gpu,
    import_cudart,
    import_tensorrt,
    logger_severity,
    name_slug,
)
from lgfa_deploy.bundle import Bundle, file_entry, sha256_file
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import GraphSpec

log = logging.getLogger(__name__)

ENGINE_DIR = "tensorrt"


@dataclass(frozen=True)
class EnginePlan:
    """One engine to build: which graph file, for which GPU, TensorRT, precision and batch range."""

    graph: str
    source_precision: str  # the precision of the ONNX file parsed
    source_sha256: str
    precision: str  # the engine's precision
    tensorrt_version: str
    device_name: str  # "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "8.6"
    profile: tuple[int, int, int]  # batch min, opt, max

    @property
    def key(self) -> str:
        """The manifest key: graph hash, TensorRT version, GPU, precision, profile."""
        lo, opt, hi = self.profile
        return (
            f"{self.graph}:{self.source_sha256[:16]}:trt{self.tensorrt_version}:{name_slug(self.device_name)}:"
            f"sm{self.compute_capability}:{self.precision}:b{lo}-{opt}-{hi}"
        )

    @property
    def file(self) -> str:
        """Engine file name in the bundle, e.g. ``tensorrt/synthesis.nvidia-a10.sm86.trt10.3.0.fp16.b1-4-16.plan``."""
        lo, opt, hi = self.profile
        sm = self.compute_capability.replace(".", "")
        return (
            f"{ENGINE_DIR}/{self.graph}.{name_slug(self.device_name)}.sm{sm}.trt{self.tensorrt_version}."
            f"{self.precision}.b{lo}-{opt}-{hi}.plan"
        )

    @property
    def strongly_typed(self) -> bool:
        """An FP16 graph is built exactly as typed; an FP32 graph with the FP16 flag gets precision constraints."""
        return self.source_precision == "fp16"

    def manifest_entry(self, root: Path) -> dict[str, Any]:
        return {
            **file_entry(root, self.file),
            "graph": self.graph,
            "tensorrt_version": self.tensorrt_version,
            "device_name": self.device_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "source_precision": self.source_precision,
            "source_sha256": self.source_sha256,
            "profile": dict(zip(("min", "opt", "max"), self.profile)),
        }


def batch_profile(spec: GraphSpec, max_batch: int | None = None) -> tuple[int, int, int]:
    """Batch (min, opt, max) of a graph's profile: its declaration, the maximum overridden if given."""
    if max_batch is None:
        return spec.batch.min, spec.batch.opt, spec.batch.max
    if max_batch < spec.batch.min:
        raise LgfaError(f"--max-batch {max_batch} is below {spec.name}'s smallest batch {spec.batch.min}")
    return spec.batch.min, min(spec.batch.opt, max_batch), max_batch


def profile_shapes(spec: GraphSpec, profile: tuple[int, int, int]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name -> (min, opt, max) shapes of an optimisation profile."""
    return {t.name: tuple(t.concrete(b) for b in profile) for t in spec.inputs}


def plan_engines(
    bundle: Bundle, *, fp16: bool, max_batch: int | None, tensorrt_version: str, gpu: Gpu
) -> list[EnginePlan]:
    """The engines to have in the bundle, one per graph."""
    precision = "fp16" if fp16 else "fp32"
    plans = []
    for name in bundle.graph_names:
        files = bundle.manifest["graphs"][name]["files"]
        source = precision if precision in files else "fp32"
        if source not in files:
            raise LgfaError(f"bundle {bundle.root} has no fp32 {name} graph to build from; re-export it")
        if fp16 and source != precision:
            log.warning("%s: no FP16 graph in the bundle; building from FP32 with TensorRT's FP16 flag", name)
        plans.append(
            EnginePlan(
                graph=name,
                source_precision=source,
                source_sha256=files[source]["sha256"],
                precision=precision,
                tensorrt_version=tensorrt_version,
                device_name=gpu.name,
                compute_capability=gpu.compute_capability,
                profile=batch_profile(bundle.graph(name), max_batch),
            )
        )
    return plans


def is_built(bundle: Bundle, plan: EnginePlan) -> bool:
    """True when the manifest records this engine and its file is present and unaltered."""
    entry = bundle.manifest.get("engines", {}).get(plan.key)
    if entry is None:
        return False
    path = bundle.root / entry["file"]
    return path.is_file() and sha256_file(path) == entry["sha256"]


def check_sources(bundle: Bundle, plans: list[EnginePlan]) -> None:
    """Refuse to build from a graph file that does not match the manifest."""
    for plan in plans:
        path = bundle.graph_path(plan.graph, plan.source_precision)
        if not path.is_file() or sha256_file(path) != plan.source_sha256:
            raise LgfaError(f"{path} is missing or does not match the manifest; re-export the bundle")


def add_uint8_frames(model: Any, image: str = "image") -> Any:
    """Append to an ONNX synthesis model the uint8 BGR frames of its ``image`` output, as output ``frames``.

    ``frames`` [B, H, W, 3] = ``round(clip((image + 1) * 127.5, 0, 255))`` with the channels reversed
    and moved last: the runtime's :func:`lgfa_deploy.backends.to_uint8_bgr`, on the device. Rewrites
    ``model`` in place and returns it.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    source = next((o for o in graph.output if o.name == image), None)
    if source is None:
        raise ValueError(f"the model has no output {image!r}")
    prefix = f"{FRAMES_OUTPUT}/"
    constants = {
        "one": np.array(1.0, np.float32),
        "half_range": np.array(127.5, np.float32),
        "low": np.array(0.0, np.float32),
        "high": np.array(255.0, np.float32),
        "bgr": np.array([2, 1, 0], np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, prefix + k) for k, v in constants.items())
    steps = [
        ("Add", [image, prefix + "one"], {}),
        ("Mul", [None, prefix + "half_range"], {}),
        ("Clip", [None, prefix + "low", prefix + "high"], {}),
        ("Round", [None], {}),
        ("Gather", [None, prefix + "bgr"], {"axis": 1}),
        ("Transpose", [None], {"perm": [0, 2, 3, 1]}),
        ("Cast", [None], {"to": TensorProto.UINT8}),
    ]
    previous = image
    for index, (op, inputs, attributes) in enumerate(steps):
        output = FRAMES_OUTPUT if index == len(steps) - 1 else f"{prefix}{op.lower()}"
        inputs = [previous if i is None else i for i in inputs]
        graph.node.append(helper.make_node(op, inputs, [output], name=f"{prefix}{op}", **attributes))
        previous = output
    dims = source.type.tensor_type.shape.dim
    batch, height, width = (d.dim_param or d.dim_value for d in (dims[0], dims[2], dims[3]))
    graph.output.append(helper.make_tensor_value_info(FRAMES_OUTPUT, TensorProto.UINT8, [batch, height, width, 3]))
    return model


# -- TensorRT and CUDA (imported lazily) --------------------------------------------------------


def timing_cache_path(root: Path, tensorrt_version: str, gpu: Gpu) -> Path:
    """The bundle's persistent timing cache for one TensorRT version and GPU."""
    sm = gpu.compute_capability.replace(".", "")
    return root / ENGINE_DIR / f"timing.{gpu.slug}.sm{sm}.trt{tensorrt_version}.cache"


_STATISTIC_LAYERS = ("REDUCE", "NORMALIZATION", "SOFTMAX")


def constrain_statistics(trt: Any, network: Any) -> int:
    """Pin to FP32 the layers an FP16 build must not narrow; returns how many were pinned.

    Reductions, normalisations, softmax and powers (sums of squares, means, norms) run in FP32, and so
    does every layer whose computed floating-point inputs all come from FP32 layers (the demodulation
    factor, PixelNorm's scale): the rule :mod:`export.fp16` applies to the ONNX graph.
    """
    statistic_types = {getattr(trt.LayerType, name) for name in _STATISTIC_LAYERS}
    constant_type = trt.LayerType.CONSTANT
    fp32_tensors: set[str] = set()
    constants: set[str] = set()
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if layer.type == constant_type:
            constants.update(t.name for t in outputs)
            continue
        floats = [t for t in outputs if t.dtype == trt.float32]
        if not floats:
            continue
        computed = [
            t.name for t in (layer.get_input(i) for i in range(layer.num_inputs))
            if t is not None and t.dtype == trt.float32 and t.name not in constants
        ]
        statistic = layer.type in statistic_types
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer  # the Python binding hands out the base class
            statistic = layer.op == trt.ElementWiseOperation.POW
        if statistic or (computed and all(name in fp32_tensors for name in computed)):
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                if layer.get_output(i).dtype == trt.float32:
                    layer.set_output_type(i, trt.float32)
            fp32_tensors.update(t.name for t in floats)
            pinned += 1
    return pinned


def _parse(trt: Any, parser: Any, bundle: Bundle, plan: EnginePlan) -> None:
    """Parse the plan's graph; synthesis with the uint8 frames output added."""
    graph_path = bundle.graph_path(plan.graph, plan.source_precision)
    if plan.graph == "synthesis":
        import onnx

        model = add_uint8_frames(onnx.load(str(graph_path)))
        parsed = parser.parse(model.SerializeToString(), path=str(graph_path))
    else:
        parsed = parser.parse_from_file(str(graph_path))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LgfaError(f"TensorRT could not parse {graph_path.name}: {errors}")


def _timing_cache(config: Any, cache_path: Path) -> Any:
    """The bundle's timing cache for this GPU attached to ``config``; a fresh one where TensorRT refuses it."""
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(data) if data else None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        log.warning("TensorRT refused the timing cache %s (another GPU or TensorRT, or damaged); starting a fresh one",
                    cache_path.name)
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise LgfaError("TensorRT refused a fresh timing cache; run with -v and read TensorRT's messages above")
    return cache


def build_engine(trt: Any, bundle: Bundle, plan: EnginePlan, workspace_gib: float, cache_path: Path) -> None:
    """Parse the plan's graph, build the engine with the bundle's timing cache, write it atomically."""
    logger = trt.Logger(logger_severity(trt))
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    _parse(trt, parser, bundle, plan)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    config.clear_flag(trt.BuilderFlag.TF32)  # "fp32" means FP32; the FP32 parts of FP16 engines too
    if plan.precision == "fp16" and not plan.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("%s: %d layers kept in FP32 (statistics, reductions, normalisations)", plan.graph,
                 constrain_statistics(trt, network))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(bundle.graph(plan.graph), plan.profile).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    _timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LgfaError(f"TensorRT failed to build {plan.graph}; run with -v and read TensorRT's messages above")
    (bundle.root / plan.file).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(bundle.root / plan.file, bytes(serialized))
    write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))


def select_gpu(device: int) -> Gpu:
    """GPU ``device``, made current in this thread: the builder builds for the current device."""
    cuda = Cuda(import_cudart())
    gpu = find_gpu(cuda, device)
    cuda(cuda.rt.cudaSetDevice(device))
    return gpu


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Build a TensorRT 10 engine per graph of a bundle for the GPU in this machine, with one "
        "optimisation profile from each graph's declared batch range and a persistent timing cache; "
        "engines are recorded in the manifest and an engine that already matches is not rebuilt. "
        f"Needs TensorRT 10 and cuda-python: {INSTALL_HINT}"
    )
    parser.epilog = (
        "examples:\n  lgfa build-engines engines/tiny\n  lgfa build-engines engines/ffhq --fp16 --max-batch 8\n"
        "  lgfa -v build-engines engines/ffhq --device 1    # second GPU, TensorRT's verbose log"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("bundle", metavar="DIR", help="bundle directory written by 'lgfa export'")
    parser.add_argument("--fp16", action="store_true", help="build FP16 engines (from the FP16 graphs when present)")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch of every profile (default: as declared)")
    parser.add_argument("--workspace", type=float, default=4.0, metavar="GIB", help="builder workspace in GiB (default 4)")
    parser.add_argument("--device", type=int, default=0, metavar="N", help="CUDA GPU to build for (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.workspace <= 0:
        raise LgfaError(f"--workspace must be a positive number of GiB, got {args.workspace}")
    bundle = Bundle.open(args.bundle, verify_hashes=False)  # a damaged engine is rebuilt, not fatal
    trt = import_tensorrt()
    gpu = select_gpu(args.device)
    plans = plan_engines(bundle, fp16=args.fp16, max_batch=args.max_batch, tensorrt_version=trt.__version__, gpu=gpu)
    check_sources(bundle, plans)
    cache_path = timing_cache_path(bundle.root, trt.__version__, gpu)
    engines = bundle.manifest.setdefault("engines", {})
    for plan in tqdm(plans, desc=f"engines for {gpu.name}", unit="engine"):
        if is_built(bundle, plan):
            log.info("%s: engine %s is up to date", plan.graph, plan.file)
            continue
        log.info("%s: building %s", plan.graph, plan.file)
        build_engine(trt, bundle, plan, args.workspace, cache_path)
        engines[plan.key] = plan.manifest_entry(bundle.root)
        bundle.save_manifest()
    return 0

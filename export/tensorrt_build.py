"""``lgfa build-engines DIR``: TensorRT 10 engines for this GPU, built into a bundle.

Per graph: parse the ONNX file, one optimisation profile from the graph's declared batch range,
build with a persistent timing cache and record the engine in the manifest under ``engines``. An
engine is identified by its graph file's sha256, the TensorRT version, the GPU's compute
capability, the precision and the profile; a matching engine already present is kept, not rebuilt.

``--fp16`` builds from the bundle's FP16 graph when it has one, as a strongly typed network, so
that the FP32 statistics and normalisations the export kept stay FP32; from the FP32 graph it sets
the builder's FP16 flag instead and TensorRT chooses per layer. TensorRT and cuda-python are
imported only when the command runs.
"""
from __future__ import annotations

import argparse
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgfa_deploy.atomic import write_bytes_atomic
from lgfa_deploy.bundle import Bundle, file_entry, sha256_file
from lgfa_deploy.errors import LgfaError
from lgfa_deploy.graphs import GraphSpec

log = logging.getLogger(__name__)

ENGINE_DIR = "tensorrt"
INSTALL_HINT = "pip install 'lgfa-deploy[tensorrt]'"


@dataclass(frozen=True)
class EnginePlan:
    """One engine to build: which graph file, for which GPU, TensorRT, precision and batch range."""

    graph: str
    source_precision: str  # the precision of the ONNX file parsed
    source_sha256: str
    precision: str  # the engine's precision
    tensorrt_version: str
    compute_capability: str  # "8.6"
    profile: tuple[int, int, int]  # batch min, opt, max

    @property
    def key(self) -> str:
        """The manifest key: graph hash, TensorRT version, compute capability, precision, profile."""
        lo, opt, hi = self.profile
        return (
            f"{self.graph}:{self.source_sha256[:16]}:trt{self.tensorrt_version}:"
            f"sm{self.compute_capability}:{self.precision}:b{lo}-{opt}-{hi}"
        )

    @property
    def file(self) -> str:
        """Engine file name inside the bundle, e.g. ``tensorrt/synthesis.sm86.trt10.3.0.fp16.b1-4-16.plan``."""
        lo, opt, hi = self.profile
        sm = self.compute_capability.replace(".", "")
        return f"{ENGINE_DIR}/{self.graph}.sm{sm}.trt{self.tensorrt_version}.{self.precision}.b{lo}-{opt}-{hi}.plan"

    @property
    def strongly_typed(self) -> bool:
        """An FP16 graph is built exactly as typed; an FP32 graph with the FP16 flag is left to TensorRT."""
        return self.source_precision == "fp16"

    def manifest_entry(self, root: Path) -> dict[str, Any]:
        return {
            **file_entry(root, self.file),
            "graph": self.graph,
            "tensorrt_version": self.tensorrt_version,
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
    bundle: Bundle, *, fp16: bool, max_batch: int | None, tensorrt_version: str, compute_capability: str
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
                compute_capability=compute_capability,
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


# -- TensorRT and CUDA (imported lazily) --------------------------------------------------------


def import_tensorrt():
    """The ``tensorrt`` module (10.x), or a one-line :class:`LgfaError` saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise LgfaError(f"TensorRT is not installed; install it with: {INSTALL_HINT}") from None
    major = int(tensorrt.__version__.split(".")[0])
    if major != 10:
        raise LgfaError(f"TensorRT {tensorrt.__version__} is installed, this builder needs 10.x: {INSTALL_HINT}")
    return tensorrt


def compute_capability(device: int = 0) -> str:
    """``"major.minor"`` of CUDA device ``device``, via cuda-python's runtime bindings."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise LgfaError(f"cuda-python is not installed; install it with: {INSTALL_HINT}") from None
    values = []
    for attribute in (
        cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor,
        cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor,
    ):
        error, value = cudart.cudaDeviceGetAttribute(attribute, device)
        if error != cudart.cudaError_t.cudaSuccess:
            raise LgfaError(f"no usable CUDA GPU {device} ({cudart.cudaGetErrorName(error)[1].decode()})")
        values.append(value)
    return f"{values[0]}.{values[1]}"



def timing_cache_path(root: Path, tensorrt_version: str, capability: str) -> Path:
    """The bundle's persistent timing cache for one TensorRT version and GPU architecture."""
    return root / ENGINE_DIR / f"timing.sm{capability.replace('.', '')}.trt{tensorrt_version}.cache"


def build_engine(trt, bundle: Bundle, plan: EnginePlan, workspace_gib: float, cache_path: Path) -> None:
    """Parse the plan's graph, build the engine with the bundle's timing cache, write it atomically."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    graph_path = bundle.graph_path(plan.graph, plan.source_precision)
    if not parser.parse_from_file(str(graph_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LgfaError(f"TensorRT could not parse {graph_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if plan.precision == "fp16" and not plan.strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(bundle.graph(plan.graph), plan.profile).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LgfaError(f"TensorRT failed to build {plan.graph}; run with -v and read TensorRT's messages above")
    (bundle.root / plan.file).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(bundle.root / plan.file, bytes(serialized))
    write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Build a TensorRT 10 engine per graph of a bundle for the GPU in this machine, with one "
        "optimisation profile from each graph's declared batch range and a persistent timing cache; "
        "engines are recorded in the manifest and an engine that already matches is not rebuilt. "
        f"Needs TensorRT 10 and cuda-python: {INSTALL_HINT}"
    )
    parser.epilog = "examples:\n  lgfa build-engines engines/tiny\n  lgfa build-engines engines/ffhq --fp16 --max-batch 8"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("bundle", metavar="DIR", help="bundle directory written by 'lgfa export'")
    parser.add_argument("--fp16", action="store_true", help="build FP16 engines (from the FP16 graphs when present)")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch of every profile (default: as declared)")
    parser.add_argument("--workspace", type=float, default=4.0, metavar="GIB", help="builder workspace in GiB (default 4)")


def run(args: argparse.Namespace) -> int:
    if args.workspace <= 0:
        raise LgfaError(f"--workspace must be a positive number of GiB, got {args.workspace}")
    bundle = Bundle.open(args.bundle, verify_hashes=False)  # a damaged engine is rebuilt, not fatal
    trt = import_tensorrt()
    capability = compute_capability()
    plans = plan_engines(
        bundle, fp16=args.fp16, max_batch=args.max_batch, tensorrt_version=trt.__version__, compute_capability=capability
    )
    check_sources(bundle, plans)
    cache_path = timing_cache_path(bundle.root, trt.__version__, capability)
    engines = bundle.manifest.setdefault("engines", {})
    for plan in plans:
        if is_built(bundle, plan):
            log.info("%s: engine %s is up to date", plan.graph, plan.file)
            continue
        log.info("%s: building %s", plan.graph, plan.file)
        build_engine(trt, bundle, plan, args.workspace, cache_path)
        engines[plan.key] = plan.manifest_entry(bundle.root)
        bundle.save_manifest()
    return 0

"""``lgfa inspect PATH``: say what a checkpoint, ONNX graph or bundle is."""
from __future__ import annotations

import argparse
from pathlib import Path

from lgfa_deploy.bundle import MANIFEST, Bundle
from lgfa_deploy.errors import LgfaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Say what a file is: a rosinality StyleGAN2 generator, an lgfa or reference checkpoint, "
        "CLIP or e4e weights, an ONNX graph (inputs and outputs) or a bundle (its graphs and engines)."
    )
    parser.add_argument("path", help="file or bundle directory")


def describe_onnx(path: Path) -> str:
    try:
        import onnx
    except ImportError:
        raise LgfaError("inspecting ONNX graphs needs the onnx package: pip install 'lgfa-deploy[cpu]'") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a graph
        raise LgfaError(f"{path} is not a readable ONNX graph ({type(exc).__name__}); re-export it") from None

    def fmt(values) -> str:
        out = []
        for v in values:
            dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            out.append(f"{v.name} {dtype}[{', '.join(dims)}]")
        return ", ".join(out)

    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return (
        f"ONNX graph, opset {opset}, {len(model.graph.node)} nodes; inputs: {fmt(inputs)}; "
        f"outputs: {fmt(model.graph.output)}"
    )


def describe_bundle(path: Path) -> str:
    bundle = Bundle.open(path)
    lines = [
        f"lgfa bundle, preset {bundle.preset}, {bundle.resolution} px, {bundle.n_latent} latents, "
        f"{bundle.frames} frames, prompt {bundle.prompt_template!r}, "
        + (f"photos aligned to {bundle.face_size} px" if bundle.has_photo else "no photo graphs")
        + (" [random-init weights]" if bundle.random_init else "")
    ]
    for name in bundle.graph_names:
        spec = bundle.graph(name)
        io = ", ".join(f"{t.name}{list(t.shape)}" for t in (*spec.inputs, *spec.outputs))
        lines.append(f"  {name}: {'/'.join(bundle.precisions(name))}; {io}; batch {spec.batch.min}-{spec.batch.max}")
    for key, engine in bundle.manifest.get("engines", {}).items():
        lines.append(
            f"  engine {engine['file']}: {engine['graph']} {engine['precision']}, TensorRT {engine['tensorrt_version']}, "
            f"compute capability {engine['compute_capability']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise LgfaError(f"{path} is a directory without {MANIFEST}, so not a bundle")
        print(describe_bundle(path))
    elif not path.is_file():
        raise LgfaError(f"{path} does not exist")
    elif path.suffix == ".onnx":
        print(describe_onnx(path))
    else:
        try:
            from training.checkpoints import describe_file
        except ImportError:
            raise LgfaError("inspecting checkpoints needs torch: pip install 'lgfa-deploy[train]'") from None
        print(describe_file(path))
    return 0

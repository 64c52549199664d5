"""``lgfa triton-repo``: a model repository for NVIDIA's Triton container, generated from a bundle."""
from __future__ import annotations

import argparse
import textwrap

from lgfa_deploy.bundle import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Write a standard Triton model repository for a bundle: each graph as a model with Triton's dynamic "
        "batcher and an instance group (onnxruntime_onnx, or tensorrt_plan from the bundle's engines), and "
        "the pipeline as the Python-backend (BLS) models 'animate' (decoupled, one response per frame) and "
        "'clip'. Flavour 'cpu' serves the graphs through the Python backend instead, for a Triton without "
        "the onnxruntime backend (such as PyTriton's). The Python-backend models import lgfa_deploy: "
        "install it into the container's Python.",
        width=100,
    )
    parser.epilog = (
        "examples:\n"
        "  lgfa triton-repo --bundle engines/ffhq --out triton-repo\n"
        "  lgfa triton-repo --bundle engines/ffhq --out triton-repo-trt --graphs tensorrt --precision fp16\n"
        "  lgfa triton-repo --bundle engines/tiny --out triton-repo-cpu --flavour cpu --pipeline-instances 2\n"
        "then (see README, 'Serving'):\n"
        "  docker run --gpus all --rm -p 127.0.0.1:8001:8001 -v $PWD/triton-repo:/models -v $PWD:/src \\\n"
        "    nvcr.io/nvidia/tritonserver:24.10-py3 bash -c 'pip install /src && tritonserver --model-repository /models'"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--bundle", required=True, metavar="DIR", help="bundle directory from 'lgfa export'")
    parser.add_argument("--out", required=True, metavar="REPO", help="the model repository folder to create (must not exist)")
    parser.add_argument("--flavour", default="gpu", help="gpu (graphs on Triton's onnxruntime or tensorrt backend, KIND_GPU) "
                        "| cpu (graphs through the Python backend, KIND_CPU)")
    parser.add_argument("--graphs", default="onnxruntime", help="onnxruntime (model.onnx) | tensorrt (model.plan from "
                        "'lgfa build-engines', for the Triton whose TensorRT built them)")
    parser.add_argument("--precision", default="fp32", help=f"{' | '.join(PRECISIONS)}: synthesis precision")
    parser.add_argument("--instances", type=int, default=1, metavar="N", help="instances of each graph model per device")
    parser.add_argument("--pipeline-instances", type=int, default=8, metavar="N",
                        help="instances of 'animate' and 'clip': streams served at once by each")
    parser.add_argument("--no-photo", action="store_true",
                        help="leave out the photo graphs (the served pipeline animates seeds and latents)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US",
                        help="dynamic batcher: longest wait for a fuller batch, microseconds")


def run(args: argparse.Namespace) -> int:
    from lgfa_deploy.bundle import Bundle
    from lgfa_deploy.serve.triton_repo import write_repository

    bundle = Bundle.open(args.bundle)
    names = write_repository(
        bundle, args.out, flavour=args.flavour, graphs=args.graphs, precision=args.precision,
        instances=args.instances, pipeline_instances=args.pipeline_instances, max_queue_delay_us=args.max_queue_delay_us, photo=not args.no_photo,
    )
    print(f"wrote the Triton model repository {args.out} ({args.flavour} flavour): {', '.join(names)}")
    return 0

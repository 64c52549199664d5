"""``lgfa serve``: a bundle on Triton Inference Server (through PyTriton), many streams at once."""
from __future__ import annotations

import argparse
import textwrap

from lgfa_deploy.commands.common import add_bundle_argument, add_runtime_arguments
from lgfa_deploy.default_bundle import bundle_or_default
from lgfa_deploy.errors import LgfaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Serve a bundle on NVIDIA Triton Inference Server (the one PyTriton ships) over gRPC and HTTP. "
        "Model 'animate' streams one response per frame (decoupled, gRPC); model 'clip' answers with the "
        "whole clip (gRPC or plain HTTP); model 'stats' reports the synthesis batch sizes. Synthesis is "
        "batched across the streams in flight, up to --micro-batch frames a call. It listens on 127.0.0.1 "
        "only, unless --host says otherwise; put a TLS proxy with authentication in front of it before "
        "opening it to a network. SIGTERM or Ctrl-C lets the streams in flight finish, then exits 0.",
        width=100,
    )
    parser.epilog = (
        "examples:\n"
        "  lgfa serve --bundle engines/tiny\n"
        "  lgfa serve --bundle engines/ffhq --backend tensorrt --micro-batch 8 --grpc-port 9001 --http-port 9000 "
        "--metrics-port 9002\n"
        "  lgfa client --text \"The person is smiling.\" --seed 3 --out smile.mp4      # from another shell\n"
        "  curl -s 127.0.0.1:8002/metrics | grep nv_inference_count                  # Prometheus metrics"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_bundle_argument(parser)
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to every network)")
    net.add_argument("--grpc-port", type=int, default=8001, metavar="N", help="gRPC port (default 8001)")
    net.add_argument("--http-port", type=int, default=8000, metavar="N", help="HTTP port (default 8000)")
    net.add_argument("--metrics-port", type=int, default=8002, metavar="N", help="Prometheus metrics port (default 8002)")
    parser.add_argument("--drain-timeout", type=float, default=60.0, metavar="S",
                        help="on SIGTERM, seconds to let the streams in flight finish (default 60)")
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from lgfa_deploy import api
    from lgfa_deploy.serve.batcher import FrameBatcher
    from lgfa_deploy.serve.server import AnimationService, Ports, check_ports, serve

    if args.drain_timeout < 0:
        raise LgfaError(f"--drain-timeout must be 0 or more seconds, got {args.drain_timeout}")
    ports = Ports(args.host, args.grpc_port, args.http_port, args.metrics_port)
    check_ports(ports)  # before the model loads: a taken port is said at once
    options = {"compile": True} if args.compile else {}
    if args.compile and args.backend != "torch":
        raise LgfaError("--compile works with --backend torch only")
    animator = api.open(
        bundle_or_default(args.bundle), backend=args.backend, device=args.device, precision=args.precision,
        micro_batch=args.micro_batch, **options,
    )
    with animator:
        animator.warm_up([1, animator.micro_batch])
        service = AnimationService(animator, FrameBatcher(animator, animator.micro_batch))
        return serve(service, ports, args.drain_timeout)

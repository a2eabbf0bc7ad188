"""A real Triton Inference Server on CPU (through nvidia-pytriton) serving two small models.

- ``mlp``: a seeded two-layer perceptron, FP32 ``input`` [dim] -> ``logits`` [classes],
  dynamically batched; the classic ``infer`` benchmark over HTTP and gRPC.
- ``tiny_generate``: a decoupled (streaming) text generator for Triton's ``generate`` and
  ``generate_stream`` endpoints: ``text_input`` and ``max_tokens`` in, one ``text_output``
  response per token, ``itl_ms`` apart.

Run: ``python -m pytest_aifactory.services.pytriton_server --host H --http-port P ...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sysconfig
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt


def _mlp(dim: int, hidden: int, classes: int) -> Any:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((dim, hidden)).astype(np.float32) / np.sqrt(dim)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32) / np.sqrt(hidden)

    def infer(input: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        return {"logits": np.maximum(input @ w1, 0.0) @ w2}

    return infer


def _generator(itl_ms: float) -> Any:
    words = np.array(["alpha", "beta", "gamma", "delta"])

    def infer(requests: list[Any]) -> Iterator[list[dict[str, npt.NDArray[Any]]]]:
        max_tokens = int(np.asarray(requests[0]["max_tokens"]).reshape(-1)[0])
        for i in range(max(max_tokens, 1)):
            if i:
                time.sleep(itl_ms / 1000)
            word = (words[i % len(words)] + " ").encode()
            yield [{"text_output": np.array([[word]], dtype=object)}]

    return infer


def serve(args: argparse.Namespace) -> None:
    """Bind the models and serve until terminated."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_address=args.host,
        metrics_port=args.metrics_port,
        allow_sagemaker=False,
        allow_vertex_ai=False,
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name="mlp",
            infer_func=batch(_mlp(args.dim, args.hidden, args.classes)),
            inputs=[Tensor(name="input", dtype=np.float32, shape=(args.dim,))],
            outputs=[Tensor(name="logits", dtype=np.float32, shape=(args.classes,))],
            config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=500)),
            strict=True,
        )
        triton.bind(
            model_name="tiny_generate",
            infer_func=_generator(args.itl_ms),
            inputs=[
                Tensor(name="text_input", dtype=bytes, shape=(1,)),
                Tensor(name="max_tokens", dtype=np.int32, shape=(1,)),
            ],
            outputs=[Tensor(name="text_output", dtype=bytes, shape=(1,))],
            config=ModelConfig(batching=False, decoupled=True),
            strict=False,
        )
        triton.serve()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--itl-ms", type=float, default=2.0)
    # pytriton's workspace (its copy of tritonserver, the models' IPC sockets: paths of at most 107
    # bytes): the job's {tmp}, which the job removes, or a killed job's canceller does.
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args()
    # Triton's Python backend stub loads libpython: make this interpreter's findable.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH", "")]))
    signal.signal(signal.SIGTERM, _stop_as_ctrl_c)
    serve(args)


def _stop_as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """The job's stop (SIGTERM) as Ctrl-C: pytriton then stops tritonserver and waits for it.

    tritonserver removes its model folders from /tmp as it stops; when this process died at once
    (its output is read by this process), it was gone before it had (seen on ci-slurm). A second
    SIGTERM (``scancel --signal=TERM`` reaches every process of the step, then the job signals the
    group) would interrupt that wait: it is ignored.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()

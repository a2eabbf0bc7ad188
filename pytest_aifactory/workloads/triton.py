"""Triton clients: tensor ``infer`` over HTTP or gRPC (tritonclient), and ``generate_stream``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from pytest_aifactory.core.records import Chunk, RequestRecord
from pytest_aifactory.load.engine import Clock
from pytest_aifactory.workloads.prompts import LLMRequest
from pytest_aifactory.workloads.sse import StreamingClient

__all__ = ["RandomTensors", "TritonGenerateClient", "TritonInferClient"]


@dataclass(frozen=True)
class RandomTensors:
    """Seeded FP32 inputs of shape [batch, dim] for a model's ``input`` tensor."""

    dim: int
    batch: int = 1
    seed: int = 0

    def request(self, index: int) -> npt.NDArray[Any]:
        """The input of request ``index``."""
        return np.random.default_rng([self.seed, index]).standard_normal((self.batch, self.dim)).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """The workload as JSON-ready configuration."""
        return {"tensors": "random", "dim": self.dim, "batch": self.batch, "seed": self.seed}


@dataclass
class TritonInferClient:
    """``infer`` on one model through tritonclient's asyncio clients (``http`` or ``grpc``)."""

    url: str
    model: str
    protocol: Literal["http", "grpc"] = "http"
    input_name: str = "input"
    output_name: str = "logits"
    _client: Any = field(default=None, init=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """Configuration for reports."""
        return {"client": f"triton-{self.protocol}", "url": self.url, "model": self.model}

    async def open(self) -> None:
        """Connect."""
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as grpc_client

            self._client = grpc_client.InferenceServerClient(self.url)
            self._module: Any = grpc_client
        else:
            import tritonclient.http.aio as http_client

            self._client = http_client.InferenceServerClient(self.url, conn_limit=1000)
            self._module = http_client

    async def close(self) -> None:
        """Disconnect."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Run one inference; the response is the 'first token' and the end."""
        tensor: npt.NDArray[Any] = payload
        infer_input = self._module.InferInput(self.input_name, list(tensor.shape), "FP32")
        infer_input.set_data_from_numpy(tensor)
        outputs = [self._module.InferRequestedOutput(self.output_name)]
        result = await self._client.infer(self.model, [infer_input], outputs=outputs)
        record.end = clock.now()
        record.first_token = record.end
        output = result.as_numpy(self.output_name)
        if output is None or output.shape[0] != tensor.shape[0]:
            record.error = f"unexpected output {self.output_name}: {None if output is None else output.shape}"
        record.status = 200
        record.input_tokens = int(tensor.shape[0])


@dataclass
class TritonGenerateClient(StreamingClient):
    """Triton's ``/v2/models/MODEL/generate_stream`` (server-sent events, one per response)."""

    def describe(self) -> dict[str, Any]:
        """Configuration for reports."""
        return {"client": "triton-generate-stream", "base_url": self.base_url, "model": self.model}

    async def send(self, payload: Any, record: RequestRecord, clock: Clock) -> None:
        """Stream one generation; each event is one token."""
        assert self._streams is not None, "open() first"
        request: LLMRequest = payload
        record.input_tokens = request.input_tokens
        body = orjson.dumps({"text_input": request.prompt, "max_tokens": request.max_tokens})
        path = f"/v2/models/{self.model}/generate_stream"
        chunks: list[Chunk] = []  # on the record once the stream has ended well, not from a failed one
        await self._streams.events(path, body, record, clock, lambda now, _event: chunks.append(Chunk(now, 1)))
        if chunks:
            record.first_token = chunks[0].at
        record.chunks = chunks
        if record.end is None:
            record.end = clock.now()
        record.output_tokens = len(record.chunks)

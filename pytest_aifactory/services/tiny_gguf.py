"""Write a tiny random-weight llama model as GGUF, so llama.cpp runs anywhere without downloads.

The model has the real llama architecture (embeddings, RMS norms, attention with RoPE,
SwiGLU feed-forward) at toy size, a SentencePiece-style vocabulary of 256 byte tokens plus
common words, and a chat template. Its output is nonsense but its serving path (prefill,
decode, streaming) is the real one. The weights are seeded: the same file every time.

Run: ``python -m pytest_aifactory.services.tiny_gguf OUT.gguf [--dim 64 --layers 2]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_aifactory.core.words import COMMON_WORDS

__all__ = ["write_tiny_llama"]

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: unk, bos, eos, 256 bytes, then printable pieces."""
    normal, unknown, control, byte = 1, 2, 3, 6
    tokens = ["<unk>", "<s>", "</s>"]
    types = [unknown, control, control]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [byte] * 256
    pieces = [f"\u2581{w}" for w in COMMON_WORDS[:24]] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581"]
    tokens += pieces
    types += [normal] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def write_tiny_llama(
    path: Path, dim: int = 64, layers: int = 2, heads: int = 4, context: int = 2048, seed: int = 0
) -> Path:
    """Write the model to ``path`` and return it."""
    import gguf  # the [inference] extra

    tokens, scores, types = _vocabulary()
    vocab, ffn = len(tokens), dim * 4
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> npt.NDArray[Any]:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("aifactory-tiny-llama")
    writer.add_context_length(context)
    writer.add_embedding_length(dim)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(dim // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(_CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weights(vocab, dim))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(dim, dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(ffn, dim))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(ffn, dim))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(dim, ffn))
    writer.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, dim))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()
    write_tiny_llama(args.out, dim=args.dim, layers=args.layers, context=args.context)


if __name__ == "__main__":
    main()

"""Write a tiny random-weight Llama as a Hugging Face model folder, so vLLM runs without downloads.

``LlamaForCausalLM`` at toy size (hidden 128, 2 layers, 4 heads / 2 KV heads: about 1.3M
parameters, bf16 safetensors), a byte-level BPE tokenizer trained here with ``tokenizers`` on
sentences of the synthetic prompts' words (so a prompt word is about one token), and a chat
template. Seeded: the same model every time. Its output is nonsense; its serving path
(tokenizing, prefill, decode, streaming, the chat template) is the real one.

It runs with the vLLM environment's Python, which has torch, transformers, tokenizers and
safetensors already: the plugin's environment needs none of them. So it is run as a script
by its path and imports nothing of this package: the words come on the command line. The
folder is written beside its final name and renamed into place, so a cached model is
always complete.

Run: ``python -P tiny_hf.py OUT_DIR --words the,of,and [--hidden 128 --layers 2 --context 4096]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["model_key", "write_tiny_hf_llama"]

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def model_key(words: Sequence[str], hidden: int, layers: int, context: int, vocab: int = 4096, seed: int = 0) -> str:
    """The cached folder's name for this corpus and these sizes."""
    corpus = hashlib.sha256(",".join(words).encode()).hexdigest()[:8]
    return f"tiny-llama-hf-h{hidden}-l{layers}-c{context}-v{vocab}-s{seed}-{corpus}"


def _corpus(words: Sequence[str], seed: int, sentences: int = 2000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(4, 24))) for _ in range(sentences)]


def _tokenizer(words: Sequence[str], vocab: int, seed: int, context: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(words, seed), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=context,
        chat_template=CHAT_TEMPLATE,
    )


def write_tiny_hf_llama(
    out: Path,
    words: Sequence[str],
    hidden: int = 128,
    layers: int = 2,
    context: int = 4096,
    vocab: int = 4096,
    seed: int = 0,
) -> Path:
    """Write the model folder ``out`` (config, bf16 safetensors, tokenizer) unless it is there."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer(words, vocab, seed, context)
    size = len(tokenizer)  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),  # type: ignore[attr-defined]
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),  # type: ignore[attr-defined]
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)  # type: ignore[attr-defined]
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the cached model from other users' jobs
        try:
            staging.rename(out)
        except OSError:  # another job wrote it first: keep that one
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--words", required=True, help="comma-separated words of the tokenizer's corpus")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    write_tiny_hf_llama(args.out, args.words.split(","), args.hidden, args.layers, args.context, args.vocab)


if __name__ == "__main__":
    main()

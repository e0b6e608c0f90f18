"""langchain-openai against a real daemon: with_structured_output by each of its three
methods, and OpenAIEmbeddings with its default settings (token-id input).

OpenAIEmbeddings tokenizes with tiktoken's cl100k_base, whose ranks file tiktoken
downloads from OpenAI at first use; tests run offline, so a byte-level encoding built
here stands in for it. The request shape is the default one (token ids, base64).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import tiktoken
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.helpers import DaemonProcess

pytestmark = pytest.mark.real_model


class Country(BaseModel):
    name: str
    capital: str


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    """The HTTP client langchain's openai clients use, closed when the test ends."""
    with httpx2.Client() as client:
        yield client


def chat(daemon: DaemonProcess, http: httpx2.Client) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=daemon.http_url + "/v1",
        api_key="x",  # type: ignore[arg-type]
        model="smollm2",
        temperature=0,
        max_tokens=150,  # type: ignore[call-arg]
        max_retries=0,
        http_client=http,
    )


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_to_a_pydantic_model(
    shared_daemon: DaemonProcess, http: httpx2.Client, method: str
) -> None:
    model = chat(shared_daemon, http).with_structured_output(Country, method=method)  # type: ignore[arg-type]
    answer = model.invoke("Which country is Paris in? Give the country and its capital.")
    assert isinstance(answer, Country) and answer.name and answer.capital


def test_structured_output_json_mode(shared_daemon: DaemonProcess, http: httpx2.Client) -> None:
    model = chat(shared_daemon, http).with_structured_output(method="json_mode")
    answer: Any = model.invoke(
        'Answer in JSON with keys "name" and "capital": which country is Paris in?'
    )
    assert isinstance(answer, dict)


@pytest.fixture
def offline_cl100k(monkeypatch: pytest.MonkeyPatch) -> None:
    byte_level = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: byte_level)
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: byte_level)


def test_openai_embeddings_with_default_settings(
    shared_daemon: DaemonProcess, offline_cl100k: None, http: httpx2.Client
) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=shared_daemon.http_url + "/v1",
        api_key="x",  # type: ignore[arg-type]
        model="smollm2",
        max_retries=0,
        http_client=http,
    )
    assert embeddings.check_embedding_ctx_length  # the default: token ids are sent
    documents = embeddings.embed_documents(["The sky is blue.", "Grass is green."])
    assert len(documents) == 2 and len(documents[0]) > 100
    query = embeddings.embed_query("The sky is blue.")
    assert math.isclose(math.fsum(v * v for v in query), 1.0, rel_tol=1e-3)
    assert query == pytest.approx(documents[0], abs=1e-4)

"""Chat templates by name: the built-ins, the owner's folder, switching and unloading
the resident model's template, in both route families."""

from __future__ import annotations

from pathlib import Path

import pytest
from rkllmd.templates import TemplateLibrary

from tests.helpers import MODEL_ID
from tests.http.conftest import chat_body, manager_of
from tests.http.dialects.tabby.conftest import ADMIN, KEYS, USER

BUILTINS = {"chatml", "llama3", "mistral", "gemma", "qwen3", "phi3", "zephyr", "deepseek-r1"}


def _resident_template(client) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    resident = manager_of(client).status().resident
    assert resident is not None
    return resident.options.chat_template_name, resident.props.chat_template


@pytest.mark.parametrize("path", ["/v1/template/list", "/v1/templates"])
async def test_list(make_client, tmp_path: Path, path: str) -> None:
    (tmp_path / "house.jinja").write_text("{{ messages[0]['content'] }}")
    (tmp_path / "notes.txt").write_text("not a template")
    client = await make_client(http=KEYS, templates_dir=str(tmp_path))
    admin = await (await client.get(path, headers=ADMIN)).json()
    assert admin["object"] == "list" and set(admin["data"]) == BUILTINS | {"house"}
    assert all(isinstance(name, str) for name in admin["data"])
    # An API key sees the resident model's template only (TabbyAPI's rule).
    assert (await (await client.get(path, headers=USER)).json())["data"] == ["model"]


@pytest.mark.parametrize(
    ("switch", "unload"),
    [
        (("POST", "/v1/template/switch"), ("POST", "/v1/template/unload")),
        (("POST", "/v1/templates/switch"), ("DELETE", "/v1/templates/active")),
    ],
)
async def test_switch_and_unload(client, switch, unload) -> None:  # type: ignore[no-untyped-def]
    own = _resident_template(client)
    answer = await client.request(*switch, json={"prompt_template_name": "llama3"})
    assert answer.status == 200 and (await answer.json())["prompt_template"] == "llama3"
    assert _resident_template(client) == ("llama3", TemplateLibrary(None).get("llama3").text)
    card = await (await client.get("/v1/model")).json()
    assert card["parameters"]["prompt_template"] == "llama3"
    assert (await client.request(*unload)).status == 200
    assert _resident_template(client) == own


async def test_switch_keeps_the_other_load_options(client) -> None:
    await client.post("/v1/models/load", json={"model_name": "smollm2", "max_seq_len": 1024})
    await client.post("/v1/template/switch", json={"prompt_template_name": "gemma"})
    resident = manager_of(client).status().resident
    assert resident is not None and resident.props.n_ctx == 1024
    assert resident.options.chat_template_name == "gemma"


async def test_switch_errors(make_client) -> None:
    client = await make_client()
    unknown = await client.post("/v1/template/switch", json={"prompt_template_name": "nope"})
    body = await unknown.json()
    assert unknown.status == 400 and body["error"]["code"] == "unknown_template"
    assert set(body["error"]["details"]["available"]) == BUILTINS
    assert _resident_template(client)[0] is None  # nothing was installed
    empty = await client.post("/v1/template/switch", json={})
    assert empty.status == 400 and (await empty.json())["error"]["param"] == "prompt_template_name"
    idle = await make_client(load=False)
    answer = await idle.post("/v1/template/switch", json={"prompt_template_name": "chatml"})
    assert answer.status == 400 and (await answer.json())["error"]["code"] == "no_model_loaded"


async def test_owner_templates_are_used_and_replace_builtins(make_client, tmp_path: Path) -> None:
    own = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    (tmp_path / "house.jinja").write_text(own)
    (tmp_path / "chatml.jinja").write_text(own + "# mine\n")
    client = await make_client(templates_dir=str(tmp_path))
    await client.post("/v1/models/load", json={"model_name": "smollm2", "prompt_template": "house"})
    assert _resident_template(client) == ("house", own)
    await client.post("/v1/template/switch", json={"prompt_template_name": "chatml"})
    assert _resident_template(client) == ("chatml", own + "# mine\n")


def test_every_builtin_renders_a_conversation() -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And at night?"},
    ]
    library = TemplateLibrary(None)
    for name in BUILTINS:
        text = env.from_string(library.get(name).text).render(
            messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
        )
        for message in messages:
            assert message["content"] in text, (name, message)
        assert text.index("sky") < text.index("Blue.") < text.index("night"), name


def test_a_name_is_never_taken_for_template_text() -> None:
    library = TemplateLibrary(None)
    with pytest.raises(Exception, match="available") as raised:
        library.resolve("mistral-ish")
    assert getattr(raised.value, "code", None) == "unknown_template"
    assert library.resolve("mistral").text != "mistral"
    inline = library.resolve("{{ messages[0]['content'] }}")
    assert inline.origin == "inline" and inline.name == "custom"


@pytest.mark.real_model
async def test_switching_changes_the_rendered_prompt(client) -> None:
    """The same conversation costs a different number of prompt tokens under another
    template, and a named template keeps the user's message (not 2 tokens)."""

    async def prompt_tokens() -> int:
        answer = await client.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        return int((await answer.json())["usage"]["prompt_tokens"])

    own = await prompt_tokens()
    counts = {}
    for name in ("mistral", "llama3", "phi3"):
        switched = await client.post("/v1/template/switch", json={"prompt_template_name": name})
        assert switched.status == 200
        counts[name] = await prompt_tokens()
        assert counts[name] > 4, (name, counts)  # "Say hello" and the markers are there
    assert len({own, *counts.values()}) == 4, (own, counts)
    assert manager_of(client).status().model == MODEL_ID

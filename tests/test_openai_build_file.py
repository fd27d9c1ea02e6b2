"""OpenAI build: an ir.Image that is not an image (a PDF from an Anthropic document block or a
Responses input_file) becomes the Chat Completions file part, never an image_url.

Theory: Chat Completions takes files as {"type": "file", "file": {"filename", "file_data":
"data:<type>;base64,<data>"}} (openai.types.chat ChatCompletionContentPartParam `File`);
image_url only takes images, so a PDF sent there is rejected. Images (and an Image without a
media type, which the IR treats as an image) keep the image_url part.
"""

from __future__ import annotations

import orjson
import pytest
from pydantic import TypeAdapter

from stub_provider import StubProvider
from plexus import ir
from plexus.dialects.openai.build import build_request


Prov = StubProvider


def _user_content(parts) -> list:
    body = orjson.loads(build_request(ir.Request("m", [ir.Message("user", parts)]), "gpt", Prov()))
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    TypeAdapter(CompletionCreateParamsNonStreaming).validate_python(body)
    return body["messages"][-1]["content"]


@pytest.mark.parametrize("img, part", [
    (ir.Image("application/pdf", "JVBERi0x"),
     {"type": "file", "file": {"filename": "attachment.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}),
    (ir.Image("text/plain", "aGk="),
     {"type": "file", "file": {"filename": "attachment.txt", "file_data": "data:text/plain;base64,aGk="}}),
    (ir.Image("application/zip", "UEs="),
     {"type": "file", "file": {"filename": "attachment.bin", "file_data": "data:application/zip;base64,UEs="}}),
    (ir.Image("application/pdf", url="https://x.test/a.pdf"),
     {"type": "file", "file": {"filename": "attachment.pdf", "file_data": "https://x.test/a.pdf"}}),
    (ir.Image("image/jpeg", "/9j/"), {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}),
    (ir.Image(None, "iVBO"), {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}),
    (ir.Image(url="https://x.test/cat.png"), {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}),
], ids=["pdf", "text", "unknown", "pdf-url", "jpeg", "no-type", "image-url"])
def test_attachment_parts(img, part):
    assert _user_content([ir.Text("see"), img]) == [{"type": "text", "text": "see"}, part]


def test_pdf_in_a_tool_result_moves_to_the_user_message_as_a_file():
    req = ir.Request("m", [
        ir.Message("assistant", [ir.ToolCall("c1", "read", "{}")]),
        ir.Message("user", [ir.ToolResult("c1", [ir.Text("here"), ir.Image("application/pdf", "JVBE")])])])
    msgs = orjson.loads(build_request(req, "gpt", Prov()))["messages"]
    assert msgs[1] == {"role": "tool", "tool_call_id": "c1", "content": "here"}
    assert msgs[2] == {"role": "user", "content": [
        {"type": "file", "file": {"filename": "attachment.pdf", "file_data": "data:application/pdf;base64,JVBE"}}]}


def test_anthropic_document_reaches_openai_as_a_file():
    from plexus.dialects.anthropic.request import parse_request
    req = parse_request({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        {"type": "text", "text": "summarize"}]}]})
    req.extra.clear()
    assert _user_content(req.messages[0].parts)[0]["type"] == "file"

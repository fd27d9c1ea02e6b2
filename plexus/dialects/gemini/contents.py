"""Gemini `contents` ↔ IR messages: parts, images, function calls/responses, signatures (pure).

The conversation half of the Gemini request (parse decisions documented in request.py, build
decisions in build.py). `parse_contents` reads a Gemini client's contents;
`build_contents` writes a Gemini provider's contents and collects the "system" IR messages
into the systemInstruction parts it is given.

State carried while walking a conversation, in plain locals: the unanswered calls of the latest
model turn (parse: pairs functionResponse parts to call ids), the call id → name table (build:
names functionResponse parts), and a pending signature-only Gemini thinking (build: attached to
the next part of the turn).
"""

from __future__ import annotations

from typing import Any

import orjson

from ... import ir
from ...errors import invalid
from ..common import args_object, either, str_or_empty
from ..signatures import unwrap_sig
from .encode import read_sig

SKIP_SIGNATURE = "skip_thought_signature_validator"
_DROPPED_PARTS = ("executableCode", "executable_code", "codeExecutionResult",
                  "code_execution_result", "videoMetadata", "video_metadata")
_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                "webp": "image/webp", "heic": "image/heic", "heif": "image/heif",
                "pdf": "application/pdf"}


# ================================================================ parse (client → IR)

def parse_contents(contents: list) -> list[ir.Message]:
    messages: list[ir.Message] = []
    pending: list[list] = []  # unanswered calls of the latest model turn: [id, name, answered]
    run: ir.Thinking | None = None  # the open thought run (it may span a turn's contents)
    ncalls = 0
    for ci, c in enumerate(contents):
        where = f"contents[{ci}]"
        if not isinstance(c, dict):
            raise invalid("each content must be an object with role and parts", where)
        role = c.get("role") or "user"
        if role == "model":
            irole = "assistant"
        elif role in ("user", "function", "tool"):
            irole = "user"
        else:
            raise invalid(f"unknown role {role!r}: use \"user\" or \"model\"", f"{where}.role")
        gparts = c.get("parts")
        if gparts is None:
            gparts = []
        if not isinstance(gparts, list):
            raise invalid("parts must be a list", f"{where}.parts")
        if messages and messages[-1].role == irole:  # one IR message per turn (see docstring)
            parts = messages[-1].parts
        else:
            parts = []
            messages.append(ir.Message(irole, parts))
            run = None
            ncalls = 0
        mi = len(messages) - 1
        for pi, p in enumerate(gparts):
            pw = f"{where}.parts[{pi}]"
            if not isinstance(p, dict):
                raise invalid("each part must be an object", pw)
            sig = either(p, "thoughtSignature", "thought_signature")
            if sig is not None and not isinstance(sig, str):
                raise invalid("thoughtSignature must be a base64 string", f"{pw}.thoughtSignature")
            src, sig, red = read_sig(sig) if sig else ("gemini", None, False)
            if p.get("thought"):
                t = p.get("text") or ""
                if not isinstance(t, str):
                    raise invalid("text must be a string", f"{pw}.text")
                if red:
                    parts.append(ir.Thinking(sig, redacted=True, source="anthropic"))
                    run = None
                    continue
                if run is None:
                    if not t and not sig:
                        continue
                    run = ir.Thinking(t, source=src)
                    parts.append(run)
                else:
                    run.text += t
                if sig:
                    run.signature = sig
                    run.source = src
                    run = None
                continue
            run = None
            if sig and src == "anthropic":  # not produced by our encoder on such parts; keep it
                parts.append(ir.Thinking(sig, redacted=True, source="anthropic") if red
                             else ir.Thinking("", signature=sig, source="anthropic"))
                sig = None
            if "text" in p:
                t = p["text"]
                if not isinstance(t, str):
                    raise invalid("text must be a string", f"{pw}.text")
                if t or sig:
                    parts.append(ir.Text(t, signature=sig))
                continue
            fc = either(p, "functionCall", "function_call")
            if fc is not None:
                if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                    raise invalid("functionCall needs a name", f"{pw}.functionCall")
                args = fc.get("args")
                if args is None:
                    args = {}
                if not isinstance(args, dict):
                    raise invalid("functionCall.args must be an object", f"{pw}.functionCall.args")
                cid = str_or_empty(fc.get("id")) or f"call_{mi}_{ncalls}"
                if ncalls == 0:
                    pending = []
                ncalls += 1
                pending.append([cid, fc["name"], False])
                parts.append(ir.ToolCall(cid, fc["name"], orjson.dumps(args).decode(), signature=sig))
                continue
            fr = either(p, "functionResponse", "function_response")
            if fr is not None:
                if not isinstance(fr, dict):
                    raise invalid("functionResponse must be an object", f"{pw}.functionResponse")
                parts.append(_parse_function_response(fr, pending, mi, len(parts), pw))
                continue
            blob = either(p, "inlineData", "inline_data")
            if blob is not None:
                data = blob.get("data") if isinstance(blob, dict) else None
                if not isinstance(data, str):
                    raise invalid("inlineData needs base64 data", f"{pw}.inlineData")
                mime = str_or_empty(either(blob, "mimeType", "mime_type")) or None
                parts.append(ir.Image(media_type=mime, data=data))
                continue
            fd = either(p, "fileData", "file_data")
            if fd is not None:
                uri = either(fd, "fileUri", "file_uri") if isinstance(fd, dict) else None
                if not isinstance(uri, str):
                    raise invalid("fileData needs a fileUri", f"{pw}.fileData")
                mime = str_or_empty(either(fd, "mimeType", "mime_type")) or None
                parts.append(ir.Image(media_type=mime, url=uri))
                continue
            if any(k in p for k in _DROPPED_PARTS):
                continue
            keys = ", ".join(sorted(k for k in p if k not in ("thoughtSignature", "thought_signature")))
            raise invalid(f"unsupported part ({keys or 'empty'})", pw)
    return messages


def _parse_function_response(fr: dict, pending: list, mi: int, pi: int, pw: str) -> ir.ToolResult:
    name = fr.get("name")
    if not isinstance(name, str):
        raise invalid("functionResponse needs a name", f"{pw}.functionResponse.name")
    fid = str_or_empty(fr.get("id"))
    match = None
    if fid:
        for c in pending:
            if c[0] == fid and not c[2]:
                match = c
                break
    if match is None:
        for c in pending:
            if not c[2] and c[1] == name and (not fid or not any(x[0] == fid for x in pending)):
                match = c
                break
    if match is not None:
        match[2] = True
        cid = match[0]
    else:
        cid = fid or f"call_{mi}_r{pi}"
    resp = fr.get("response")
    if resp is None:
        resp = {}
    if not isinstance(resp, dict):
        raise invalid("functionResponse.response must be an object", f"{pw}.functionResponse.response")
    is_error = False
    if len(resp) == 1 and isinstance(resp.get("output"), str):
        content = resp["output"]
    elif len(resp) == 1 and "error" in resp:
        is_error = True
        e = resp["error"]
        content = e if isinstance(e, str) else orjson.dumps(e).decode()
    else:
        content = orjson.dumps(resp).decode()
    return ir.ToolResult(cid, content, is_error=is_error, name=name)


# ================================================================ build (IR → provider)


def _image_part(img: ir.Image, where: str) -> dict:
    if img.data:
        return {"inlineData": {"mimeType": img.media_type or "image/png", "data": img.data}}
    url = img.url or ""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise invalid("image data URLs must be base64 encoded", where)
        mime = head[5:].split(";", 1)[0] or "image/png"
        return {"inlineData": {"mimeType": mime, "data": data}}
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https", "gs"):
        raise invalid("Gemini providers take images as base64 data or http(s)/gs URLs; "
                      f"unsupported image URL {url[:60]!r}", where)
    mime = img.media_type
    if not mime:
        ext = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1].rpartition(".")[2].lower()
        mime = _MIME_BY_EXT.get(ext, "image/jpeg")
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _result_parts(r: ir.ToolResult, names: dict, where: str) -> tuple[dict, list]:
    name = r.name or names.get(r.call_id) or r.call_id
    images = []
    if isinstance(r.content, str):
        text = r.content
    else:
        texts = []
        for c in r.content:
            if isinstance(c, ir.Text):
                texts.append(c.text)
            elif isinstance(c, ir.Image):
                images.append(_image_part(c, where))
        text = "\n".join(texts)
    if r.is_error:
        resp: Any = {"error": text}
    else:
        resp = None
        if text[:1] == "{":
            try:
                v = orjson.loads(text)
            except orjson.JSONDecodeError:
                v = None
            if isinstance(v, dict):
                resp = v
        if resp is None:
            resp = {"output": text}
    return {"functionResponse": {"name": name, "response": resp}}, images


def build_contents(messages: list[ir.Message], system: list) -> list:
    contents: list = []
    names: dict = {}  # tool call id → name (the latest call with that id)
    for mi, m in enumerate(messages):
        if m.role == "system":
            for p in m.parts:
                if isinstance(p, ir.Text) and p.text:
                    system.append({"text": p.text})
            continue
        role = "model" if m.role == "assistant" else "user"
        parts = _model_parts(m.parts, names, mi) if role == "model" else _user_parts(m.parts, names, mi)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for c in contents:
        if c["role"] == "model":
            calls = [p for p in c["parts"] if "functionCall" in p]
            if calls and not any("thoughtSignature" in p for p in calls):
                calls[0]["thoughtSignature"] = SKIP_SIGNATURE
    return contents


def _user_parts(src: list, names: dict, mi: int) -> list:
    out: list = []
    images: list = []
    for pi, p in enumerate(src):
        where = f"messages[{mi}].content[{pi}]"
        if isinstance(p, ir.Text):
            if p.text:
                out.append({"text": p.text, "thoughtSignature": p.signature} if p.signature
                           else {"text": p.text})
        elif isinstance(p, ir.Image):
            out.append(_image_part(p, where))
        elif isinstance(p, ir.ToolResult):
            part, imgs = _result_parts(p, names, where)
            out.append(part)
            images.extend(imgs)
        # Thinking / ToolCall in a user turn: nothing Gemini can take; dropped
    out.extend(images)
    return out


def _gemini_sig(t: ir.Thinking) -> str | None:
    if t.redacted or not t.signature:
        return None
    if t.source == "gemini":
        return t.signature
    if t.source is None:
        return unwrap_sig(t.signature)[1]
    return None


def _model_parts(src: list, names: dict, mi: int) -> list:
    out: list = []
    pending: str | None = None   # a signature-only Gemini thinking waiting for its part
    for pi, p in enumerate(src):
        if isinstance(p, ir.Thinking):
            sig = _gemini_sig(p)
            if sig is None:
                continue
            if p.text:
                out.append({"text": p.text, "thought": True, "thoughtSignature": sig})
            else:
                if pending is not None:
                    out.append({"text": "", "thought": True, "thoughtSignature": pending})
                pending = sig
            continue
        if isinstance(p, ir.Text):
            if not p.text and not p.signature:
                continue
            part: dict = {"text": p.text}
            sig = p.signature
        elif isinstance(p, ir.ToolCall):
            names[p.id] = p.name
            part = {"functionCall": {"name": p.name, "args": args_object(p.arguments)}}
            sig = p.signature
        elif isinstance(p, ir.Image):
            part = _image_part(p, f"messages[{mi}].content[{pi}]")
            sig = None
        else:
            continue
        if sig is None and pending is not None:
            sig, pending = pending, None
        if sig:
            part["thoughtSignature"] = sig
        out.append(part)
    if pending is not None:
        for part in reversed(out):
            if "thoughtSignature" not in part and not part.get("thought"):
                part["thoughtSignature"] = pending
                break
        else:
            out.append({"text": "", "thought": True, "thoughtSignature": pending})
    return out

"""OpenAI Responses API: a message's (or a tool output's) content -> IR parts (`parse_content`),
for request.py. Pure: no I/O, no clock, no module state mutated.

- A string -> one Text (an empty one skipped for the assistant). Parts: input_text /
  output_text / refusal -> Text (empty assistant texts skipped).
- input_image {image_url: base64 data URL or http(s)} -> Image; file_id -> 400 (Plexus keeps
  no files).
- input_file {file_data (data URL or raw base64), file_url, filename} -> Image(media_type), the
  IR's binary attachment (Anthropic document, Gemini inline data, OpenAI file part); media
  type: the data URL's, else by extension (filename, then URL), else application/pdf. Inline
  data of a text type, or of an unknown type that decodes as UTF-8 (not "%PDF"), becomes a Text
  (filename on its own first line): every provider reads text, few take text attachments.
  file_id -> 400.
- Images and files: user messages only (else 400); any other part type -> 400 naming it.
"""

from __future__ import annotations

import base64
import binascii

from ... import ir
from ...errors import invalid

__all__ = ["parse_content"]

_TEXT_KEY = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
_OX = "application/vnd.openxmlformats-officedocument."
_MIME = {"pdf": "application/pdf", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
         "gif": "image/gif", "webp": "image/webp", "txt": "text/plain", "md": "text/markdown",
         "csv": "text/csv", "json": "application/json", "docx": _OX + "wordprocessingml.document",
         "xlsx": _OX + "spreadsheetml.sheet", "pptx": _OX + "presentationml.presentation"}
_TEXT_TYPES = frozenset(("application/json", "application/xml", "application/yaml", "application/x-yaml",
                         "application/javascript", "application/x-sh"))


def parse_content(c, w: str, role: str) -> list:
    """A message's (or a tool output's) content: a string or parts. Empty assistant texts are
    skipped; images and files only for "user"."""
    if isinstance(c, str):
        return [ir.Text(c)] if c or role != "assistant" else []
    if not isinstance(c, list):
        raise invalid(f"{w} must be a string or an array of content parts", w)
    out: list = []
    for j, p in enumerate(c):
        pw = f"{w}[{j}]"
        t = p.get("type") if isinstance(p, dict) else None
        key = _TEXT_KEY.get(t) if type(t) is str else None
        if key is not None:
            if not isinstance(s := p.get(key), str):
                raise invalid(f"{pw}.{key} must be a string", f"{pw}.{key}")
            if s or role != "assistant":
                out.append(ir.Text(s))
        elif t in ("input_image", "input_file"):
            if role != "user":
                raise invalid(f"{pw}: {role} messages take text only (got {t})", pw)
            out.append(_image(p, pw) if t == "input_image" else _file(p, pw))
        else:
            raise invalid(f"{pw}: unsupported content part type {t!r} (expected input_text, "
                          "input_image, input_file, output_text or refusal)", pw)
    return out


def _image(p: dict, w: str) -> ir.Image:
    url = _text(p.get("image_url")) or ""
    if not url and p.get("file_id") is not None:
        raise invalid(f"{w}.file_id: Plexus keeps no files: send image_url", f"{w}.file_id")
    if url.startswith("data:"):
        mt, data = _data_url(url, f"{w}.image_url")
        return ir.Image(media_type=mt, data=data)
    if url.startswith(("https://", "http://")):
        return ir.Image(url=url)
    raise invalid(f"{w}.image_url must be an http(s) URL or a base64 data URL", f"{w}.image_url")


def _file(p: dict, w: str):
    data, url, fname = _text(p.get("file_data")), _text(p.get("file_url")), _text(p.get("filename"))
    if data:
        mt = None
        if data.startswith("data:"):
            mt, data = _data_url(data, f"{w}.file_data")
        mt = mt or _ext_type(fname)
        if mt is None or mt.startswith("text/") or mt in _TEXT_TYPES:
            text = _decoded(data)
            if text is not None:
                return ir.Text(f"{fname}\n{text}" if fname else text)
        return ir.Image(media_type=mt or "application/pdf", data=data)
    if url:
        if not url.startswith(("https://", "http://")):
            raise invalid(f"{w}.file_url must be an http(s) URL", f"{w}.file_url")
        mt = _ext_type(fname) or _ext_type(url.split("?", 1)[0].split("#", 1)[0])
        return ir.Image(media_type=mt or "application/pdf", url=url)
    if p.get("file_id") is not None:
        raise invalid(f"{w}.file_id: Plexus keeps no files: send file_data or file_url", f"{w}.file_id")
    raise invalid(f"{w}: input_file needs file_data or file_url", w)


def _data_url(url: str, w: str) -> tuple[str | None, str]:
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise invalid(f"{w}: a data URL must be base64 (data:<type>;base64,<data>)", w)
    return head[5:-7].split(";", 1)[0] or None, data


def _ext_type(name: str | None) -> str | None:
    if not name or "." not in name.rsplit("/", 1)[-1]:
        return None
    return _MIME.get(name.rpartition(".")[2].lower())


def _decoded(data: str) -> str | None:
    """The UTF-8 text of base64 `data`; None for invalid base64, a PDF or binary data."""
    try:
        raw = base64.b64decode(data)
        if raw.startswith(b"%PDF") or b"\0" in raw:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):          # (UnicodeDecodeError is a ValueError)
        return None


def _text(v) -> str | None:
    """v if it is a non-empty string, else None (request.py's small check too)."""
    return v if type(v) is str and v else None

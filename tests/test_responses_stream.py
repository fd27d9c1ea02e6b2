"""Responses dialect, stream: every recorded upstream stream → the Responses SSE stream.

Theory (the properties of tests/test_stream_matrix.py, for the fourth client dialect):
- Split invariance: the same client bytes whether the upstream body arrives whole, cut at any
  byte (sampled for long fixtures), one byte at a time, or at hypothesis-chosen points.
- Client validity: every payload validates as the openai SDK's `ResponseStreamEvent` with no
  undeclared field, its `type` is the SSE event name, sequence numbers run 0, 1, 2...; the
  stream opens with response.created + response.in_progress and ends with exactly one terminal
  event (completed / incomplete iff the upstream finished, else failed); each item is added
  (output_index 0, 1, 2...) before its events, which follow the API's order for its kind and
  repeat the joined deltas in their .done events, and is done before the next one is added. The
  SDK's own accumulator (ResponseStreamState) takes the whole stream: its snapshot built from
  the added items and deltas holds the final texts and arguments, and the terminal object's
  output is exactly the items of the output_item.done events.
- Conservation: text, thinking, tool calls, signatures and redacted blocks are the ones the
  source decoder found (test_stream_matrix.reference).
- Same answer as non-stream: the final object equals render_response of the same content (the
  sink calls collected into an ir.Response; and, the other way round, random ir.Responses
  replayed as sink calls), ids included, with the same ctx.
- Garbage in (bytes, mutated fixtures, values of the wrong type) raises nothing but
  GatewayError and still gives a well-formed stream.
"""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from plexus import ir
from plexus.dialects.registry import get as dialect_record
from plexus.dialects.responses.encode import StreamEncoder, render_response
from plexus.dialects.responses.names import flat_name, unwrap_reasoning
from plexus.errors import STREAM_CUT, GatewayError
from test_responses_encode import strict
from test_stream_matrix import (FIXTURES, ODD_VALUES, SETTINGS, _nodes, _replace, ends_in_error, raw, reference,
                                split_points, sse_events)

SRCS = ("openai", "anthropic", "gemini")
CASES = [(s, n) for s in SRCS for n in FIXTURES[s]]
_TA = TypeAdapter(ResponseStreamEvent)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def ctx(src: str = "anthropic", **extra) -> ir.Context:
    return ir.Context(model="ctx-model", id_seed="5eed5eed5eed", created=1700000000, extra={"upstream": src, **extra})


def translate(src: str, chunks, c: ir.Context | None = None) -> bytes:
    """What stream.Translator does, with this encoder (the registry wiring is the lead's)."""
    enc = StreamEncoder(c or ctx(src))
    dec = dialect_record(src).decode.StreamDecoder(enc)
    out = []
    for ch in chunks:
        dec.feed(ch)
        out.append(enc.take())
    dec.close()
    out += (enc.take(), enc.close())
    assert enc.close() == b"", "a second close() must write nothing"
    return b"".join(out)


# ---------------------------------------------------------------- client-side checks

# the events of one item between its added and done, one letter each, by kind
_LETTER = {"response.content_part.added": "P", "response.output_text.delta": "t", "response.output_text.done": "T",
           "response.content_part.done": "Q", "response.reasoning_summary_part.added": "S",
           "response.reasoning_summary_text.delta": "s", "response.reasoning_summary_text.done": "U",
           "response.reasoning_summary_part.done": "V", "response.function_call_arguments.delta": "a",
           "response.function_call_arguments.done": "A", "response.custom_tool_call_input.delta": "c",
           "response.custom_tool_call_input.done": "C"}
_ORDER = {"message": re.compile(r"Pt*TQ"), "reasoning": re.compile(r"(Ss*UV)?"),
          "function_call": re.compile(r"a*A"), "custom_tool_call": re.compile(r"c?C")}
_DELTA_OF_DONE = {"T": ("t", "text"), "U": ("s", "text"), "A": ("a", "arguments"), "C": ("c", "input")}


def check(data: bytes, outcome: str | None) -> dict:
    """Validate a Responses client stream; return what it carries. outcome None: either ending."""
    objs = []
    for k, (name, p) in enumerate(sse_events(data)):
        obj = orjson.loads(p)
        assert name == obj["type"], f"event: {name} carries a {obj['type']} payload"
        assert obj["sequence_number"] == k, "sequence numbers must run 0, 1, 2..."
        strict(_TA.validate_python(obj))
        objs.append(obj)
    types = [o["type"] for o in objs]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in TERMINAL and not set(types[:-1]) & set(TERMINAL), types
    got = "error" if types[-1] == "response.failed" else "end"
    assert outcome in (None, got), f"expected the stream to end with {outcome}, it ended with {got}"
    first = objs[0]["response"]
    assert first["status"] == "in_progress" and first["output"] == [] and first["usage"] is None
    assert objs[1]["response"] == first
    final = objs[-1]["response"]
    assert final["id"] == first["id"] and final["model"] == first["model"]
    assert final["status"] == {"response.completed": "completed", "response.incomplete": "incomplete",
                               "response.failed": "failed"}[types[-1]]
    # items: added → their events in the kind's order → done, one at a time, indexes 0, 1, 2...
    done_items, open_, seq, text, thinking = [], None, [], [], []
    for o in objs[2:-1]:
        t = o["type"]
        if t == "response.output_item.added":
            assert open_ is None, "an item added while another is open"
            assert o["output_index"] == len(done_items)
            open_, seq = o, []
            assert o["item"]["type"] in _ORDER
        elif t == "response.output_item.done":
            assert open_ is not None and o["output_index"] == open_["output_index"]
            item, added = o["item"], open_["item"]
            assert item["id"] == added["id"] and item["type"] == added["type"]
            letters = "".join(x for x, _ in seq)
            assert _ORDER[item["type"]].fullmatch(letters), f"{item['type']} events {letters}"
            for x, ev in seq:
                if x in _DELTA_OF_DONE:
                    d, field = _DELTA_OF_DONE[x]
                    assert ev[field] == "".join(e["delta"] for y, e in seq if y == d)
            if item["type"] == "message":
                assert item["content"][0]["text"] == next(e["text"] for x, e in seq if x == "T")
            elif item["type"] == "function_call":
                assert item["arguments"] == next(e["arguments"] for x, e in seq if x == "A")
            elif item["type"] == "reasoning":
                assert "".join(p["text"] for p in item["summary"]) == "".join(e["delta"] for x, e in seq if x == "s")
            done_items.append(item)
            open_ = None
        else:
            assert open_ is not None and o["output_index"] == open_["output_index"]
            assert o["item_id"] == open_["item"]["id"]
            seq.append((_LETTER[t], o))
            if t == "response.output_text.delta":
                text.append(o["delta"])
            elif t == "response.reasoning_summary_text.delta":
                thinking.append(o["delta"])
    assert final["output"] == done_items, "the final object's output is the items done"
    ids = [i["id"] for i in done_items]
    assert len(set(ids)) == len(ids)
    # the SDK's accumulator takes every event; its delta snapshot holds the final texts
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for o in objs:
        out = state.handle_event(_TA.validate_python(o))
    if types[-1] == "response.completed":
        sdk = out[-1].response          # the SDK's final response
        assert [(i.type, i.id) for i in sdk.output] == [(i["type"], i["id"]) for i in done_items]
        assert sdk.output_text == "".join(c["text"] for i in done_items if i["type"] == "message"
                                          for c in i["content"])
    snap = getattr(state, "_ResponseStreamState__current_snapshot")
    for i, item in enumerate(done_items):
        s = snap.output[i]
        if item["type"] == "message":
            assert s.content[0].text == item["content"][0]["text"]
        elif item["type"] == "function_call":
            assert s.arguments == item["arguments"] and s.call_id == item["call_id"]
    if got == "end":
        assert final["usage"] is not None and final["error"] is None
    else:
        assert final["error"]["message"] and final["usage"] is None
    return {"text": "".join(text), "thinking": "".join(thinking), "end": got, "final": final,
            "items": done_items, "objs": objs}


def call_args(s: str):
    try:
        return orjson.loads(s) if s.strip() else {}
    except orjson.JSONDecodeError:
        return s


# ---------------------------------------------------------------- sink calls → ir.Response

class Collect:
    """An ir.Sink that gathers a stream's content the way a non-stream answer holds it."""

    def __init__(self):
        self.parts, self.open, self.calls = [], None, {}
        self.model, self.stop, self.u = "", "end_turn", ir.Usage()

    def start(self, id, model, usage):
        self.model = model or ""
        if usage:
            self.u.update(usage)

    def text(self, s):
        if s:
            if not isinstance(self.open, ir.Text):
                self.open = ir.Text("")
                self.parts.append(self.open)
            self.open.text += s

    def thinking(self, s):
        if s:
            if not isinstance(self.open, ir.Thinking):
                self.open = ir.Thinking("")
                self.parts.append(self.open)
            self.open.text += s

    def signature(self, sig):
        if not isinstance(self.open, ir.Thinking):
            self.parts.append(ir.Thinking(""))
        self.parts[-1].signature = sig
        self.open = None

    def redacted_thinking(self, data):
        self.parts.append(ir.Thinking(data, redacted=True, source="anthropic"))
        self.open = None

    def tool_start(self, index, id, name, signature=None):
        if index not in self.calls:
            self.calls[index] = self.open = ir.ToolCall(id, name, "", signature)
            self.parts.append(self.open)

    def tool_args(self, index, fragment):
        self.calls[index].arguments += fragment

    def block_end(self):
        self.open = None

    def usage(self, u):
        self.u.update(u)

    def finish(self, stop_reason, stop_sequence=None):
        self.stop = stop_reason

    def end(self):
        pass

    def error(self, err):
        pass

    def response(self) -> ir.Response:
        return ir.Response(None, self.model, self.parts, self.stop, None, self.u)


def replay(resp: ir.Response, enc: StreamEncoder, split: int = 1) -> None:
    """An ir.Response as the sink calls a decoder makes (tool arguments in `split` fragments)."""
    enc.start(resp.id, resp.model, None)
    for i, p in enumerate(resp.parts):
        if isinstance(p, ir.Text):
            if p.signature:             # as the Gemini decoder sends a text part's signature
                enc.thinking("")
                enc.signature(p.signature)
                enc.block_end()
            enc.text(p.text)
        elif isinstance(p, ir.Thinking):
            if p.redacted:
                enc.redacted_thinking(p.text)
            else:
                enc.thinking(p.text)
                if p.signature:
                    enc.signature(p.signature)
        else:
            enc.tool_start(i, p.id, p.name, p.signature)
            n = max(1, len(p.arguments) // split)
            for k in range(0, len(p.arguments), n):
                enc.tool_args(i, p.arguments[k:k + n])
        enc.block_end()
    enc.finish(resp.stop_reason)
    enc.usage(resp.usage)
    enc.end()


def final_object(data: bytes) -> dict:
    last = data[:-2].rsplit(b"\n\n", 1)[-1]
    return orjson.loads(last.split(b"\ndata: ", 1)[1])["response"]


# ---------------------------------------------------------------- the recorded streams

def test_fixtures_cover_every_provider():
    assert all(len(FIXTURES[s]) >= 6 for s in SRCS)


@pytest.mark.parametrize("src,name", CASES)
def test_whole_stream_is_valid_and_conserves_content(src, name):
    ref = reference(src, name)
    outcome = "error" if ends_in_error(name) else "end"
    got = check(translate(src, [raw(src, name)]), outcome)
    assert got["text"] == ref["text"] and got["thinking"] == ref["thinking"]
    items = got["items"]
    if outcome == "error":
        assert got["final"]["error"]["code"] in ("server_error", "rate_limit_exceeded", "invalid_prompt")
        return
    assert [(i["name"], call_args(i["arguments"])) for i in items if i["type"] == "function_call"] == ref["tools"]
    sealed = [unwrap_reasoning(i["encrypted_content"]) for i in items
              if i["type"] == "reasoning" and i["encrypted_content"] is not None]
    assert all(d is not None for d in sealed)
    assert sum(d["r"] for d in sealed) == ref["redacted"]
    untag = [s[len("plexus-gemini:"):] if s.startswith("plexus-gemini:") else s for _, s in ref["sigs"]]
    assert [d["s"] for d in sealed if not d["r"]] == untag
    # whose signature: a "plexus-gemini:" tag or a Gemini provider → gemini, else Anthropic's
    assert [d["p"] for d in sealed if not d["r"]] == [
        "gemini" if src == "gemini" or s.startswith("plexus-gemini:") else "anthropic" for _, s in ref["sigs"]]


@pytest.mark.parametrize("src,name", CASES)
def test_final_object_is_render_response_of_the_same_content(src, name):
    c = ctx(src)
    data = translate(src, [raw(src, name)], c)
    col = Collect()
    dec = dialect_record(src).decode.StreamDecoder(col)
    dec.feed(raw(src, name))
    dec.close()
    if ends_in_error(name):
        assert final_object(data)["status"] == "failed"
        return
    assert final_object(data) == orjson.loads(render_response(col.response(), c))


@pytest.mark.parametrize("src,name", CASES)
def test_every_split_point_and_one_byte_at_a_time(src, name):
    data = raw(src, name)
    whole = translate(src, [data])
    for i in split_points(len(data)):
        assert translate(src, [data[:i], data[i:]]) == whole, f"split at byte {i} changed the output"
    assert translate(src, [data[i:i + 1] for i in range(len(data))]) == whole, "byte-at-a-time differs"


@pytest.mark.parametrize("src,name", CASES)
@SETTINGS
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12))
def test_hypothesis_splits(src, name, cuts):
    data = raw(src, name)
    pts = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0] + pts, pts + [len(data)])]
    assert translate(src, chunks) == translate(src, [data])


# ---------------------------------------------------------------- non-stream equivalents

@pytest.mark.parametrize("src,name", [
    ("anthropic", "message_text.json"), ("anthropic", "message_tools_thinking.json"),
    ("openai", "completion_tools.json"), ("gemini", "response_tools.json"), ("gemini", "response_blocked.json"),
])
def test_provider_answers_replayed_as_a_stream_end_in_render_response(src, name):
    resp = dialect_record(src).decode.parse_response(raw(src, name))
    for p in resp.parts:                 # a stream's thinking source is the provider type
        if isinstance(p, ir.Thinking) and not p.redacted:
            p.source = None
    c = ctx(src)
    enc = StreamEncoder(c)
    replay(resp, enc, split=3)
    data = enc.take()
    check(data, "end")
    assert final_object(data) == orjson.loads(render_response(resp, c))


_TEXT = st.text(max_size=12)
_SIG = st.sampled_from(["sigA", "c2ln", "plexus-gemini:Zw=="])


@st.composite
def answers(draw):
    up = draw(st.sampled_from(SRCS))
    part = st.one_of(
        st.builds(ir.Text, _TEXT, signature=st.none() | (_SIG if up == "gemini" else st.none())),
        st.builds(ir.Thinking, _TEXT, st.none() | _SIG),
        st.builds(ir.Thinking, st.text(min_size=1, max_size=8), redacted=st.just(True), source=st.just("anthropic")),
        st.builds(ir.ToolCall, st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["f", "apply_patch", "ns__g"]),
                  st.sampled_from(["{}", '{"input":"x"}', '{"a": [1, 2]}', "bad"]), signature=st.none() | _SIG))
    parts = draw(st.lists(part, max_size=6))
    ids = iter(range(100))
    for p in parts:                      # call ids are unique within an answer
        if isinstance(p, ir.ToolCall):
            p.id = f"{p.id}_{next(ids)}"
    stop = draw(st.sampled_from(ir.STOP_REASONS))
    u = ir.Usage(*draw(st.lists(st.none() | st.integers(0, 999), min_size=5, max_size=5)))
    return up, ir.Response(None, draw(st.sampled_from(["", "m"])), parts, stop, None, u)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ans=answers(), split=st.integers(1, 4))
def test_replayed_answers_end_in_render_response(ans, split):
    up, resp = ans
    c = ctx(up, custom_tools={"apply_patch"}, tool_names={"ns__g": ("ns", "g")})
    enc = StreamEncoder(c)
    replay(resp, enc, split)
    data = enc.take()
    got = check(data, "end")
    assert final_object(data) == orjson.loads(render_response(resp, c))
    assert got["text"] == "".join(p.text for p in resp.parts if isinstance(p, ir.Text))


# ---------------------------------------------------------------- the encoder's own rules

def test_exact_bytes_of_a_text_delta_and_the_terminal_event():
    enc = StreamEncoder(ctx())
    enc.start(None, "up-model", None)
    enc.take()
    enc.text('Hi "x"')
    out = enc.take()
    assert out.endswith(
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"msg_5eed5eed5eed_0",'
        b'"output_index":0,"content_index":0,"delta":"Hi \\"x\\"","logprobs":[],"sequence_number":4}\n\n')
    enc.end()
    out = enc.take()
    assert out.startswith(b"event: response.output_text.done\n")
    assert out.rsplit(b"\n\n", 2)[-2].startswith(b'event: response.completed\ndata: {"type":"response.completed",'
                                                  b'"response":{"id":"resp_5eed5eed5eed","object":"response",')
    assert out.endswith(b',"sequence_number":8}\n\n') and enc.take() == b"" and enc.close() == b""


def test_interleaved_parallel_calls_each_keep_their_fragments():
    enc = StreamEncoder(ctx("openai"))
    enc.start(None, None, None)
    enc.tool_start(0, "c0", "a")
    enc.tool_start(1, "c1", "b")
    for i, frag in ((1, '{"y"'), (0, '{"x"'), (1, ":2}"), (0, ":1}")):
        enc.tool_args(i, frag)
    enc.tool_args(7, "ignored")          # no such call
    enc.finish("tool_use")
    enc.end()
    got = check(enc.take(), "end")
    assert [(i["call_id"], i["arguments"]) for i in got["items"]] == [("c0", '{"x":1}'), ("c1", '{"y":2}')]
    assert enc.stop == "tool_use"


def test_custom_and_namespaced_calls_in_a_stream():
    flat = flat_name("mcp__fs", "read")
    c = ctx("anthropic", custom_tools=frozenset({"apply_patch"}), tool_names={flat: ("mcp__fs", "read")})
    enc = StreamEncoder(c)
    enc.start(None, None, None)
    enc.tool_start(0, "t0", "apply_patch")
    enc.tool_args(0, '{"input": "*** Begin')
    enc.tool_args(0, ' Patch\\n"}')
    enc.block_end()
    enc.tool_start(1, "t1", flat)
    enc.tool_args(1, '{"p": 1}')
    enc.block_end()
    enc.finish("tool_use")
    enc.end()
    got = check(enc.take(), "end")
    assert got["items"] == [
        {"id": "ctc_5eed5eed5eed_0", "type": "custom_tool_call", "call_id": "t0", "name": "apply_patch",
         "input": "*** Begin Patch\n"},
        {"id": "fc_5eed5eed5eed_1", "type": "function_call", "status": "completed", "arguments": '{"p": 1}',
         "call_id": "t1", "name": "read", "namespace": "mcp__fs"}]
    added = [o["item"] for o in got["objs"] if o["type"] == "response.output_item.added"]
    assert added[0]["input"] == "" and added[1]["status"] == "in_progress" and added[1]["namespace"] == "mcp__fs"


def test_gemini_tool_signature_is_a_reasoning_item_before_the_call():
    enc = StreamEncoder(ctx("gemini"))
    enc.start(None, None, None)
    enc.text("Looking.")
    enc.tool_start(0, "call_x", "search", "c2ln")
    enc.tool_args(0, "{}")
    enc.finish("end_turn")
    enc.end()
    got = check(enc.take(), "end")
    assert [i["type"] for i in got["items"]] == ["message", "reasoning", "function_call"]
    assert unwrap_reasoning(got["items"][1]["encrypted_content"]) == {"p": "gemini", "s": "c2ln", "t": "", "r": False}


def test_signature_seals_its_item_and_more_thinking_opens_another():
    enc = StreamEncoder(ctx("anthropic"))
    enc.thinking("a")
    enc.signature("s1")
    enc.thinking("b")
    enc.signature("s2")
    enc.signature("s3")                   # a second signature: an item of its own
    enc.redacted_thinking("zz")
    enc.end()
    got = check(enc.take(), "end")
    docs = [unwrap_reasoning(i["encrypted_content"]) for i in got["items"]]
    assert [(d["t"], d["s"], d["r"]) for d in docs] == [("a", "s1", False), ("b", "s2", False), ("", "s3", False),
                                                        ("zz", None, True)]
    assert got["thinking"] == "ab" and got["items"][3]["summary"] == []


def test_max_tokens_is_response_incomplete_with_late_usage():
    enc = StreamEncoder(ctx())
    enc.start("msg_1", "m", ir.Usage(input_tokens=5, cache_read_tokens=3))
    enc.text("cut sh")
    enc.finish("max_tokens")
    enc.usage(ir.Usage(output_tokens=9, reasoning_tokens=2))
    enc.end()
    got = check(enc.take(), "end")
    assert got["objs"][-1]["type"] == "response.incomplete"
    f = got["final"]
    assert f["incomplete_details"] == {"reason": "max_output_tokens"}
    assert f["usage"] == {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                          "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 17}
    assert enc.stop == "max_tokens" and enc._usage.output_tokens == 9


def test_refusal_is_incomplete_content_filter():
    enc = StreamEncoder(ctx())
    enc.finish("refusal")
    enc.end()
    got = check(enc.take(), "end")
    assert got["final"]["incomplete_details"] == {"reason": "content_filter"} and got["items"] == []


def test_error_mid_item_is_response_failed_and_nothing_follows():
    enc = StreamEncoder(ctx())
    enc.start(None, None, None)
    enc.text("done one")
    enc.block_end()
    enc.tool_start(0, "c", "f")
    enc.tool_args(0, '{"a"')
    enc.error(GatewayError(429, "rate limited upstream"))
    for call in (lambda: enc.text("x"), lambda: enc.thinking("y"), lambda: enc.tool_args(0, "z"),
                 lambda: enc.tool_start(1, "d", "g"), lambda: enc.signature("s"), lambda: enc.redacted_thinking("r"),
                 enc.block_end, lambda: enc.finish("end_turn"), enc.end, lambda: enc.error(ValueError("again"))):
        call()
    got = check(enc.take() + enc.close(), "error")
    assert got["final"]["error"] == {"code": "rate_limit_exceeded", "message": "rate limited upstream"}
    assert [i["type"] for i in got["items"]] == ["message"]
    assert enc.failure == "rate limited upstream"


def test_close_without_end_fails_the_stream_and_a_bare_end_is_valid():
    enc = StreamEncoder(ctx())
    enc.thinking("hmm")
    got = check(enc.close(), "error")
    assert got["final"]["error"] == {"code": "server_error", "message": STREAM_CUT} and enc.failure == STREAM_CUT
    assert enc.close() == b""
    enc = StreamEncoder(ctx())
    enc.end()
    got = check(enc.take(), "end")
    assert got["final"]["output"] == [] and got["final"]["model"] == "ctx-model" and enc.failure is None
    enc.text("late")
    assert enc.take() == b""


def test_a_non_gateway_error_is_a_502():
    enc = StreamEncoder(ctx())
    enc.error(RuntimeError("boom"))
    got = check(enc.take(), "error")
    assert got["final"]["error"] == {"code": "server_error", "message": "boom"}


# ---------------------------------------------------------------- garbage in

def run_garbage(src: str, chunks: list[bytes]) -> None:
    enc = StreamEncoder(ctx(src))
    dec = dialect_record(src).decode.StreamDecoder(enc)
    out = []
    try:
        for ch in chunks:
            dec.feed(ch)
            out.append(enc.take())
        dec.close()
    except GatewayError as e:      # allowed: the handler then calls fail(), which ends the encoder
        enc.error(e)
    out += (enc.take(), enc.close())
    check(b"".join(out), None)


@pytest.mark.parametrize("src", SRCS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(chunks=st.lists(st.binary(max_size=64), max_size=6))
def test_garbage_bytes(src, chunks):
    run_garbage(src, chunks)


@pytest.mark.parametrize("src", SRCS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_fixture_events_with_values_of_the_wrong_type(src, data):
    name = data.draw(st.sampled_from([n for n in FIXTURES[src] if n.endswith(".sse")]))
    sep = b"\r\n\r\n" if src == "gemini" else b"\n\n"
    blocks = raw(src, name).replace(b"\r\n", b"\n").split(b"\n\n")
    k = data.draw(st.integers(0, len(blocks) - 1))
    head, _, payload = blocks[k].rpartition(b"data: ")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = None
    if obj is not None:
        path = data.draw(st.sampled_from(list(_nodes(obj))))
        blocks[k] = head + b"data: " + orjson.dumps(_replace(obj, path, data.draw(ODD_VALUES)))
    body = sep.join(b.replace(b"\n", b"\r\n") if src == "gemini" else b for b in blocks)
    run_garbage(src, [body])


@pytest.mark.parametrize("src", SRCS)
@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_mutated_fixtures(src, data):
    blob = bytearray(raw(src, data.draw(st.sampled_from(FIXTURES[src]))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(("flip", "drop", "dup")))
        if op == "flip":
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "drop":
            del blob[i: i + data.draw(st.integers(1, 40))]
        else:
            blob[i:i] = blob[i: i + data.draw(st.integers(1, 40))]
        if not blob:
            break
    run_garbage(src, [bytes(blob)])

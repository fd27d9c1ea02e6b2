"""Micro-benchmark of the pure stream translators: CPU µs per upstream event, no network.

Usage (from the repo root):
    python -m bench.stream_translate                  # full table (~10 s)
    python -m bench.stream_translate --quick          # fewer samples (~3 s)
    python -m bench.stream_translate --only 'anthropic>openai' --profile   # cProfile one case

Theory: the gateway's per-event translation cost is `stream.Translator.feed` (SSE framing, the
provider dialect's StreamDecoder, the client dialect's StreamEncoder) plus its share of
construction and close(); transport and writes are not in it (they are measured end to end by
`python -m bench`). Each provider dialect gets a realistic 100-event stream in its exact wire
format, built here the way the real API sends it (OpenAI: role chunk, 97 content chunks, finish
chunk, `[DONE]`; Anthropic: message_start, content_block_start, 95 text deltas, stop,
message_delta, message_stop; Gemini alt=sse: 99 CRLF-framed text chunks with the prompt-only
usageMetadata, as recorded in tests/fixtures/gemini, and a final chunk with finishReason and
full usage; `--gemini-usage-per-chunk` makes the usage change in every chunk, the costlier case). Every case runs in two feeding modes: the whole body in one
chunk, and one chunk per event (what the upstream usually sends: one HTTP chunk per event).

A case is `provider>client` (the Translator's src>dst: "anthropic>openai" is an OpenAI client
on an Anthropic provider, the end-to-end bench's S3), or `passthrough:<dialect>`.
One run = construct + feed every chunk + close(); a sample times `--runs` runs with
time.process_time and divides by runs × 100 events; best-of-N and median of N samples are
reported, and the verdict against the budgets (≤ 5 µs translated, ≤ 1 µs passthrough) is on the
MEDIAN: the best of many samples is the luckiest one, not what a request costs. Before timing, each case's
output is checked (whole and per-event feeding give the same bytes, the client stream ends with
its normal terminal event, not an error), so a broken translator cannot look fast.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

import orjson

from plexus import ir
from plexus.stream import Passthrough, Translator

EVENTS = 100
GEMINI_USAGE_PER_CHUNK = False    # --gemini-usage-per-chunk: the costlier variant
BUDGET_TRANSLATED = 5.0
BUDGET_PASSTHROUGH = 1.0
DIALECTS = ("openai", "anthropic", "gemini")
MODEL = {"openai": "gpt-4o-2024-08-06", "anthropic": "claude-sonnet-4-5-20250929",
         "gemini": "gemini-2.5-flash"}
_WORDS = ("Hello", " there", ",", " this", " is", " a", " benchmark", " reply", " from", " the",
          " upstream", ".", " It", " streams", " tokens", " quickly", " — ünïcödé", " and",
          " \"quoted\"", " text\n")


def _tok(i: int) -> str:
    return _WORDS[i % len(_WORDS)] + _WORDS[(i * 7 + 3) % len(_WORDS)]


# ------------------------------------------------------------------ upstream streams


def openai_events() -> list[bytes]:
    def ev(delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk",
            "created": 1741570283, "model": MODEL["openai"], "service_tier": "default",
            "system_fingerprint": "fp_eb9dce56a8",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + b"\n\n"

    out = [ev({"role": "assistant", "content": "", "refusal": None})]
    out += [ev({"content": _tok(i)}) for i in range(EVENTS - 3)]
    out += [ev({}, "stop"), b"data: [DONE]\n\n"]
    return out


def anthropic_events() -> list[bytes]:
    def ev(name: str, d: dict) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n"

    n = EVENTS - 5
    out = [ev("message_start", {"type": "message_start", "message": {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": MODEL["anthropic"], "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}),
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})]
    out += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": _tok(i)}}) for i in range(n)]
    out += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                    "stop_sequence": None},
                                 "usage": {"output_tokens": n}}),
            ev("message_stop", {"type": "message_stop"})]
    return out


def gemini_events() -> list[bytes]:
    # Gemini's alt=sse bodies use ", " / ": " separators and CRLF line ends
    def ev(text: str, finish: str | None, out_tokens: int) -> bytes:
        cand = '{"content": {"parts": [{"text": %s}],"role": "model"}%s,"index": 0}' % (
            orjson.dumps(text).decode(), ',"finishReason": "%s"' % finish if finish else "")
        ct = '"candidatesTokenCount": %d,' % out_tokens if out_tokens else ""
        um = ('{"promptTokenCount": 9,%s"totalTokenCount": %d,'
              '"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}]}' % (ct, 9 + out_tokens))
        return ('data: {"candidates": [%s],"usageMetadata": %s,"modelVersion": "%s",'
                '"responseId": "xkvKaN3LBPGWz7IPk8mX-QM"}\r\n\r\n' % (cand, um, MODEL["gemini"])).encode()

    # as recorded (tests/fixtures/gemini): intermediate chunks repeat the prompt-only usage, the
    # final one adds candidatesTokenCount; GEMINI_USAGE_PER_CHUNK: it grows in every chunk
    return [ev(_tok(i), "STOP" if i == EVENTS - 1 else None,
               i + 1 if GEMINI_USAGE_PER_CHUNK or i == EVENTS - 1 else 0) for i in range(EVENTS)]


STREAMS = {"openai": openai_events, "anthropic": anthropic_events, "gemini": gemini_events}

# the client stream's normal last event, and what an error event looks like
_TERMINAL = {"openai": b"data: [DONE]\n\n", "anthropic": b'{"type":"message_stop"}\n\n',
             "gemini": b"\r\n\r\n"}


def context(src: str, dst: str) -> ir.Context:
    """The Context the handler makes (server/handler.py): upstream marked in extra."""
    return ir.Context(model=MODEL[src], id_seed="9f1c2a7b3d4e5f60718293a4", created=1741570283,
                      include_usage=False, alias="bench", gemini_sse=True, extra={"upstream": src})


# ------------------------------------------------------------------ cases


class Case:
    __slots__ = ("name", "src", "dst", "events", "budget")

    def __init__(self, src: str, dst: str | None) -> None:
        self.src, self.dst = src, dst
        self.name = f"{src}>{dst}" if dst else f"passthrough:{src}"
        self.events = STREAMS[src]()
        assert len(self.events) == EVENTS
        self.budget = BUDGET_TRANSLATED if dst else BUDGET_PASSTHROUGH

    def make(self):
        if self.dst is None:
            return Passthrough(self.src, True)
        return Translator(self.src, self.dst, context(self.src, self.dst))

    def chunks(self, mode: str) -> list[bytes]:
        return [b"".join(self.events)] if mode == "whole" else self.events

    def run(self, chunks: list[bytes]) -> bytes:
        tr = self.make()
        out = [tr.feed(c) for c in chunks]
        out.append(tr.close())
        return b"".join(out)

    def check(self) -> None:
        """Refuse to time a case whose output is wrong (split-dependent, cut or an error)."""
        whole = self.run(self.chunks("whole"))
        per = self.run(self.chunks("event"))
        if whole != per:
            raise SystemExit(f"{self.name}: output differs between whole and per-event feeding")
        if self.dst is None:
            if whole != b"".join(self.events):
                raise SystemExit(f"{self.name}: passthrough changed the bytes")
            return
        if not whole.endswith(_TERMINAL[self.dst]) or b'"error"' in whole:
            raise SystemExit(f"{self.name}: the client stream does not end normally:\n{whole[-300:]!r}")


def all_cases() -> list[Case]:
    return [Case(s, d) for s in DIALECTS for d in DIALECTS if d != s] + [Case(d, None) for d in DIALECTS]


def measure(case: Case, mode: str, samples: int, runs: int) -> tuple[float, float]:
    """(best, median) CPU µs per event over `samples` samples of `runs` runs each."""
    chunks = case.chunks(mode)
    run = case.run
    for _ in range(max(runs // 4, 2)):      # warm-up
        run(chunks)
    clock = time.process_time
    per = []
    for _ in range(samples):
        t0 = clock()
        for _ in range(runs):
            run(chunks)
        per.append((clock() - t0) * 1e6 / (runs * EVENTS))
    return min(per), statistics.median(per)


def profile(case: Case, mode: str, runs: int, top: int) -> None:
    chunks = case.chunks(mode)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(runs):
        case.run(chunks)
    pr.disable()
    print(f"\n### profile: {case.name}, {mode} ({runs} runs)\n```", file=sys.stderr)
    pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(top)
    print("```", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_translate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (~3 s)")
    p.add_argument("--samples", type=int, help="samples per case and mode (60; quick 20)")
    p.add_argument("--runs", type=int, help="100-event runs per sample (10; quick 5)")
    p.add_argument("--only", default="", help="comma-separated cases, e.g. anthropic>openai,passthrough:gemini")
    p.add_argument("--mode", choices=("whole", "event", "both"), default="both")
    p.add_argument("--profile", action="store_true", help="also print a cProfile (tottime) per case to stderr")
    p.add_argument("--top", type=int, default=15, help="profile rows (15)")
    p.add_argument("--gemini-usage-per-chunk", action="store_true",
                   help="Gemini streams report a growing candidatesTokenCount in every chunk")
    a = p.parse_args(argv)
    global GEMINI_USAGE_PER_CHUNK
    GEMINI_USAGE_PER_CHUNK = a.gemini_usage_per_chunk
    samples = a.samples or (20 if a.quick else 60)
    runs = a.runs or (5 if a.quick else 10)
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    every = all_cases()
    cases = [c for c in every if not only or c.name in only]
    if not cases:
        p.error(f"no such case; cases: {', '.join(c.name for c in every)}")
    modes = ("whole", "event") if a.mode == "both" else (a.mode,)
    rows, over = [], 0
    for c in cases:
        c.check()
        cells = []
        for m in modes:
            best, med = measure(c, m, samples, runs)
            ok = med <= c.budget  # judged on the median, never on the best sample
            over += not ok
            cells.append(f"{best:.2f} | {med:.2f} | {'ok' if ok else 'OVER'}")
            if a.profile:
                profile(c, m, runs * 5, a.top)
        rows.append(f"| {c.name} | ≤ {c.budget:g} | " + " | ".join(cells) + " |")
    head = "".join(f" {m}: best | median | budget |" for m in modes)
    print(f"CPU µs per upstream event (provider>client, {EVENTS}-event streams, "
          f"{samples} samples × {runs} runs; time.process_time; Python {sys.version.split()[0]})\n")
    print("| case | budget µs |" + head)
    print("|---|---|" + "---|---|---|" * len(modes))
    print("\n".join(rows))
    print(f"\n{over} cell(s) over budget (judged on the median of {samples} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The error tree renders in each dialect's exact shape and keeps upstream statuses."""

import orjson
import pytest

from plexus.errors import GatewayError, from_upstream, render, stream_error_event


@pytest.mark.parametrize("status,oa_type,an_type,gm_status", [
    (400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (401, "authentication_error", "authentication_error", "UNAUTHENTICATED"),
    (403, "permission_error", "permission_error", "PERMISSION_DENIED"),
    (404, "invalid_request_error", "not_found_error", "NOT_FOUND"),
    (413, "invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    (429, "rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (500, "server_error", "api_error", "INTERNAL"),
    (502, "server_error", "api_error", "UNAVAILABLE"),
    (503, "server_error", "overloaded_error", "UNAVAILABLE"),
    (504, "server_error", "timeout_error", "DEADLINE_EXCEEDED"),
    (529, "server_error", "overloaded_error", "UNAVAILABLE"),
])
def test_render_shapes(status, oa_type, an_type, gm_status):
    e = GatewayError(status, "boom", param="model", code="c")
    st, headers, body = render(e, "openai")
    assert st == status and (b"content-type", b"application/json") in headers
    assert orjson.loads(body) == {"error": {"message": "boom", "type": oa_type, "param": "model", "code": "c"}}
    assert orjson.loads(render(e, "anthropic")[2]) == {"type": "error", "error": {"type": an_type, "message": "boom"}}
    assert orjson.loads(render(e, "gemini")[2]) == {"error": {"code": status, "message": "boom", "status": gm_status}}


def test_stream_error_events():
    e = GatewayError(502, "cut")
    assert stream_error_event(e, "openai").startswith(b"data: {\"error\"")
    ev = stream_error_event(e, "anthropic")
    assert ev.startswith(b"event: error\ndata: ") and ev.endswith(b"\n\n")
    assert orjson.loads(ev.split(b"data: ", 1)[1]) == {"type": "error", "error": {"type": "api_error", "message": "cut"}}


def test_from_upstream_keeps_status_message_and_retry_after():
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    e = from_upstream(429, body, [(b"Retry-After", b"7"), (b"Server", b"x")])
    assert (e.status, e.kind, e.message) == (429, "rate_limit", "slow down")
    assert e.headers == [(b"retry-after", b"7")]
    e = from_upstream(529, b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}')
    assert (e.status, e.kind) == (529, "overloaded")
    e = from_upstream(503, b'{"error":{"code":503,"message":"down","status":"UNAVAILABLE"}}')
    assert (e.status, e.message) == (503, "down")
    e = from_upstream(500, b"<html>oops</html>", provider="p")
    assert e.status == 500 and "p returned HTTP 500" in e.message and "oops" in e.message
    e = from_upstream(418, b"")
    assert e.status == 418 and e.kind == "invalid_request"

"""An ir.Sink that records every call as a tuple: the shared base of the decoder tests' sinks.

Each dialect's tests subclass it only where they want a call recorded in another form.
"""


class RecordingSink:
    def __init__(self):
        self.calls = []

    def start(self, id, model, usage):
        self.calls.append(("start", id, model, usage))

    def text(self, s):
        self.calls.append(("text", s))

    def thinking(self, s):
        self.calls.append(("thinking", s))

    def signature(self, sig):
        self.calls.append(("signature", sig))

    def redacted_thinking(self, data):
        self.calls.append(("redacted_thinking", data))

    def tool_start(self, index, id, name, signature=None):
        self.calls.append(("tool_start", index, id, name, signature))

    def tool_args(self, index, fragment):
        self.calls.append(("tool_args", index, fragment))

    def block_end(self):
        self.calls.append(("block_end",))

    def usage(self, u):
        self.calls.append(("usage", u))

    def finish(self, stop_reason, stop_sequence=None):
        self.calls.append(("finish", stop_reason, stop_sequence))

    def end(self):
        self.calls.append(("end",))

    def error(self, err):
        self.calls.append(("error", err.status, err.kind, err.message))

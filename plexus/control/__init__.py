"""The control plane: usage records and their store, inbound keys, metrics, the management API.

Nothing here is awaited on the request path: the gateway hands a finished `Usage` record to the
`Recorder` (O(1) on the loop) and background writers persist it.
"""

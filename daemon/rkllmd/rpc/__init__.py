"""JSON-RPC 2.0 control interface on a Unix socket: a thin skin over ModelManager."""

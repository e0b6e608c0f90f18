"""Backends run inside the worker process only; the daemon never imports them."""

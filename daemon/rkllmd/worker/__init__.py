"""The child process that hosts a backend, and the daemon-side proxy to it.

A model lives in its own process so that a segfault, hang or leak in native code
costs the worker and never the daemon; killing the worker always frees the memory.
"""

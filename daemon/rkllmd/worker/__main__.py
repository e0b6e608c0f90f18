"""Entry of the worker process: ``python -m rkllmd.worker``."""

from .host import main

if __name__ == "__main__":
    main()

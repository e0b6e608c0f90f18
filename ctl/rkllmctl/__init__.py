"""rkllmctl: command-line client for the rkllmd control socket."""

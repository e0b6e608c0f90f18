"""rkllmctl pull / rm against a real daemon and the Hub stand-in; progress rendering."""

from __future__ import annotations

import io
import os
from pathlib import Path

from rkllmctl.__main__ import run
from rkllmctl.pulling import PullView, pull_summary, render_event

from tests.helpers import MODEL_ID, DaemonProcess
from tests.store.conftest import GGUF, REPO_ID, tree
from tests.store.hubstub import HubStub

STEM = GGUF.removesuffix(".gguf")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def ctl(
    daemon: DaemonProcess, *argv: str, stdin: io.StringIO | None = None, tty: bool = False
) -> tuple[int, str, str]:
    out = io.StringIO()
    err: io.StringIO = Tty() if tty else io.StringIO()
    code = run(
        ["--socket", str(daemon.socket), *argv],
        env={},
        stdin=stdin or io.StringIO(""),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_pull_prints_progress_and_a_summary(store_daemon: DaemonProcess, smol_repo) -> None:
    code, out, err = ctl(store_daemon, "pull", REPO_ID)
    assert code == 0, err
    assert out.startswith(f"pulled {STEM} ({REPO_ID}@{smol_repo.commit[:10]}; 3 files;")
    assert "downloaded in" in out
    assert "resolving: looking up" in err and "publishing" in err
    assert f"downloading {GGUF} (3/3, 93.8 MiB)" in err.splitlines()

    code, out, _ = ctl(store_daemon, "pull", REPO_ID)
    assert code == 0 and "3 files, 3 already present; 0 B downloaded" in out

    code, out, _ = ctl(store_daemon, "ls")
    assert code == 0 and STEM in out


def test_pull_with_several_files_lists_them(store_daemon: DaemonProcess, hub: HubStub) -> None:
    hub.add_repo(
        "org/multi",
        {"a.Q4.gguf": b"GGUF" + os.urandom(3000), "b.Q8.gguf": b"GGUF" + os.urandom(6000)},
    )
    code, out, err = ctl(store_daemon, "pull", "org/multi")
    assert code == 1 and out == ""
    assert "org/multi has 2 model files" in err
    assert "a.Q4.gguf" in err and "b.Q8.gguf" in err and "rkllmctl pull REPO FILE" in err

    code, out, err = ctl(store_daemon, "pull", "org/multi", stdin=Tty("2\n"), tty=True)
    assert code == 0, err
    assert "which one? [1-2]" in err and out.startswith("pulled b.Q8 ")

    code, out, _ = ctl(store_daemon, "pull", "org/multi", "--include", "a.*", "--exclude", "b*")
    assert code == 0 and out.startswith("pulled a.Q4 ")


def test_rm_all_asks_or_needs_yes(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(smol_dir)
    code, _, err = ctl(daemon, "rm", "--all")
    assert code == 2 and "--yes" in err and (smol_dir / f"{MODEL_ID}.gguf").exists()
    code, _, err = ctl(daemon, "rm", "--all", stdin=Tty("n\n"), tty=True)
    assert code == 1 and "remove all 1 models" in err and (smol_dir / f"{MODEL_ID}.gguf").exists()
    code, _, _ = ctl(daemon, "rm", "x", "--all", "--yes")
    assert code == 2
    code, out, _ = ctl(daemon, "rm", "--all", "--yes")
    assert code == 0 and out == "removed 1 models\n"
    assert tree(smol_dir) == set()


def test_rm_loaded_model_hints_at_force(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(smol_dir, args=["--load", MODEL_ID])
    code, _, err = ctl(daemon, "rm", "smollm2")
    assert code == 1 and "use --force" in err
    code, out, _ = ctl(daemon, "rm", "smollm2", "--force")
    assert code == 0 and out == f"removed {MODEL_ID}\n"


# --- rendering ----------------------------------------------------------------------

EVENT = {
    "stage": "downloading",
    "file": "m.gguf",
    "file_bytes": 512,
    "file_total": 1024,
    "file_index": 1,
    "files_total": 2,
    "bytes": 1536,
    "total": 4096,
    "rate": 2048,
    "eta_s": 1.25,
    "message": "m.gguf (1/2)",
}


def test_render_event_shows_file_and_total_bars() -> None:
    file_line, total_line = render_event(EVENT)
    assert file_line.startswith("m.gguf") and "[##########----------]  50%" in file_line
    assert "512 B/1.0 KiB" in file_line and "(1/2)" in file_line
    assert total_line.startswith("total") and " 38%" in total_line
    assert "2.0 KiB/s" in total_line and "ETA 1s" in total_line
    assert render_event({"stage": "verifying", "message": "checking", "bytes": 2048}) == [
        "checking files in place: checking (2.0 KiB hashed)"
    ]


def test_pull_view_redraws_in_place_and_clears() -> None:
    stream = Tty()
    view = PullView(stream, tty=True)
    view.update(EVENT)
    view.update({**EVENT, "file_bytes": 1024})
    view.update({"stage": "publishing", "message": "publishing o/r"})
    view.finish()
    text = stream.getvalue()
    assert text.count("\x1b[1A") == 2  # back over the two-line block twice
    assert text.endswith("\r\x1b[J")
    plain = io.StringIO()
    quiet = PullView(plain, tty=False)
    for _ in range(5):
        quiet.update(EVENT)
    assert plain.getvalue().count("\n") == 1  # one line per file, not per event


def test_pull_summary() -> None:
    assert pull_summary({"id": "m"}) == "pulled m"
    result = {
        "id": "m",
        "repo": "o/r",
        "commit": "0123456789abcdef",
        "files": [{"status": "present"}, {"status": "downloaded"}],
        "downloaded_bytes": 2048,
        "elapsed_s": 0.5,
        "models": ["m", "n"],
    }
    assert pull_summary(result) == (
        "pulled m (o/r@0123456789; 2 files, 1 already present; "
        "2.0 KiB downloaded in 0.5 s; models: m, n)"
    )
    one = {"id": "m", "files": [{"status": "downloaded"}]}
    assert pull_summary(one) == "pulled m (1 file)"

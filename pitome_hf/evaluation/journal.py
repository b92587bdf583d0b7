"""The journal of `pitome-hf evaluate --output DIR`: `DIR/rows.jsonl` keyed by what the rows depend on, written row by
row as they are measured and resumed by a re-run of the same inputs; `DIR/.rows.lock`, one writer at a time; and the
checks that --output can be written, made before anything is run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from pitome_hf.evaluation.report import SCHEMA, RunResult


RESULT_FILES = tuple(f"results.{k}" for k in ("json", "csv", "md", "png"))


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first (what mkdir(parents=True) would make)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def check_output_folder(out_dir: Path) -> None:
    """Refuse an --output evaluate cannot write, without writing anything: a file, a folder under a file or one that
    is not writable, or result names (results.json, ...) or the journal taken by folders. `RowJournal` checks again
    by writing when it takes the folder."""
    out_dir = Path(out_dir)
    missing = _missing_folders(out_dir)
    parent = missing[-1].parent if missing else out_dir  # the folder that is written into first
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output {out_dir} cannot be written: it is a file, not a folder; choose a folder. Nothing "
                         "was run.")
    if not parent.is_dir():
        raise ValueError(f"--output {out_dir} cannot be written: {parent} is a file, not a folder; choose a folder you "
                         "can write. Nothing was run.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--output {out_dir} cannot be written: {parent} is not writable; choose a folder you can "
                         "write. Nothing was run.")
    blocked = [p for p in (out_dir / "rows.jsonl", *(out_dir / name for name in RESULT_FILES))
               if p.exists() and not p.is_file()]
    if blocked:
        raise ValueError(f"--output {out_dir}: {blocked[0]} is not a file, so the results cannot be written there; "
                         "remove it or choose another --output. Nothing was run.")


class RowJournal:
    """`out_dir/rows.jsonl`: a header line naming everything the rows depend on (the model's and the dataset's file
    hashes, the run's settings), then one line per measured row, each written (and flushed) as soon as it exists. A
    journal whose header matches the new run's is resumed; another is replaced (saying what differs) when the first
    new row is written, so a run that stops before measuring anything leaves the old journal as it was.

    Creating it checks that `out_dir` can be written and takes `out_dir/.rows.lock` (an exclusive flock, released by
    `close()` or when the process ends): a second evaluate into the same folder is refused, naming the lock and the
    process holding it. A journal closed before it wrote a row removes what it made (the lock file and the folders it
    created), so a refused or failed run leaves `out_dir` as it found it."""

    PATHS = ("model", "dataset")  # named for the reader; the rows depend on the files' hashes, not on the paths

    def __init__(self, out_dir: Path):
        check_output_folder(out_dir)
        self._made = _missing_folders(out_dir)  # removed again by close() when no row was written
        self._lock = None
        self._lock_made = False
        self._written = False
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / f".pitome_write_check.{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            self._undo()
            raise ValueError(f"--output {out_dir} cannot be written ({type(error).__name__}: {error.strerror or error}); "
                             "choose a folder you can write. Nothing was run.") from None
        self.path = out_dir / "rows.jsonl"
        self.lock_path = out_dir / ".rows.lock"
        lock_existed = self.lock_path.exists()
        try:
            self._lock = _take_lock(self.lock_path, out_dir)
        except BaseException:
            self._undo()  # another run's lock file stays: only the folders this one made (if empty) go
            raise
        self._lock_made = not lock_existed
        self.header: dict = {}
        self.rows: dict[str, dict] = {}

    def start(self, header: dict, resume: bool = True) -> None:
        """Read the rows of a journal with this header (when `resume`); the journal is rewritten (the header, the rows
        kept) when the first new row is added."""
        self.header = json.loads(json.dumps({"schema": SCHEMA, **header}))  # as it reads back
        old_header, rows = _read_journal(self.path) if resume else (None, {})
        keys = (set(old_header or {}) | set(self.header)) - set(self.PATHS)
        differs = sorted(k for k in keys if (old_header or {}).get(k) != self.header.get(k))
        if old_header is not None and not differs:
            self.rows = rows
        elif old_header is not None and rows:
            print(f"note: {self.path} holds {len(rows)} rows of another run ({', '.join(differs)} "
                  f"{'differs' if len(differs) == 1 else 'differ'}); they are measured again.", file=sys.stderr)

    def _rewrite(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w") as f:
            f.write(json.dumps(self.header) + "\n")
            for key, row in self.rows.items():
                f.write(json.dumps({"key": key, "row": row}) + "\n")
        os.replace(partial, self.path)

    def add(self, key: str, row: dict) -> None:
        if not self._written:
            self._rewrite()
            self._written = True
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "row": row}) + "\n")
            f.flush()

    def close(self) -> None:
        if self._lock is None:
            return
        if not self._written and self._lock_made:
            self.lock_path.unlink(missing_ok=True)  # while still held: the next run makes a new one
        self._lock.close()  # closing the file releases the flock
        self._lock = None
        if not self._written:
            self._undo()

    def _undo(self) -> None:
        """Remove the folders this journal made, deepest first, where they are still empty."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break


def _take_lock(lock_path: Path, out_dir: Path):
    """An open file holding an exclusive, non-blocking flock on `lock_path` (with this process's id in it)."""
    import fcntl

    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(f"--output {out_dir} is in use by another pitome-hf evaluate (process {holder} holds "
                         f"{lock_path}); wait for it to finish or choose another --output. Nothing was run.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


ROW_FIELDS = set(RunResult.__dataclass_fields__)


def _read_journal(path: Path) -> tuple[Optional[dict], dict]:
    """(header, {key: row}) of a journal; rows after a torn or foreign line are dropped, rows before it kept."""
    if not path.is_file():
        return None, {}
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0]) if lines else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, {}
    rows = {}
    for line in lines[1:]:
        try:
            item = json.loads(line)
            key, row = item["key"], item["row"]
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line torn by a kill: what came before it stands
        if not isinstance(row, dict) or not {"method", "keep_ratio", "metrics"} <= set(row) or set(row) - ROW_FIELDS:
            break
        rows[key] = row
    return header if isinstance(header, dict) else None, rows

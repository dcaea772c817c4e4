"""Output files and folders, written whole or not at all: each is written as a hidden sibling
(`.{name}.partial-{pid}-*`) and renamed into place only when complete. `--force` replaces only an earlier output
that holds nothing but what its writers put there (never a foreign folder, the user's files beside ours, an input or
the current folder), vetted again at the rename (another run's output written meanwhile is replaced only with
`--force`); a link to a folder is written through (the partial beside the folder it names, made where not yet, the
link kept); a replace swaps the new output and the earlier one in one step where the system can (exchange.py), and one
killed between its two renames elsewhere is undone by the next run; the partials that killed runs left are swept.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from . import exchange
from .errors import ConfigError, json_loads, name_list
from .interrupts import uninterrupted

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
# the partials this process made: one named with its id but not among them is a killed run's whose id came back (a
# container's entry point is process 1 on every run); names, not times, as a network file system's clock may differ
_MADE: set[str] = set()


@contextlib.contextmanager
def atomic_file(path: Path, sweep: bool = True) -> Iterator[Path]:
    """Yield a hidden sibling to write, `.{name}.partial-{pid}-{this write's own}`; on success it is renamed to `path`,
    on any failure removed: an interrupted run never leaves half a file. With `sweep`, what a killed run (kill -9, the
    OOM killer) left for `path` is removed first (by process id: a folder that runs on other hosts write into sweeps
    otherwise, train/chunks.py). The process id alone once named it: runs on two hosts sharing a folder, of one id
    (containers number their processes alike), wrote the same chunk into one file, each renaming the other's."""
    path = Path(path)
    if sweep:
        sweep_partials(path.parent, glob.escape(path.name))
    tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _MADE.add(tmp.name)
    try:
        with named_failures(path):
            yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def named_failures(output: Path) -> Iterator[None]:
    """A write that fails (a full disk) names no file, and the CLI's line said `No space left on device` without
    saying where: its OSError names `output`, the file or folder being written."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno:
            raise OSError(e.errno, e.strerror, str(output)) from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def current_umask() -> int:
    """The process's umask (os.umask reads it only by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writable_folder(folder: Path) -> str | None:
    """Why files cannot be created in `folder`, or None when they can: probed, not guessed (read-only mounts, /proc,
    permissions). A missing folder is probed at its nearest existing ancestor, and nothing is left behind: a
    refused run must not leave empty folders."""
    probe = Path(folder).absolute()  # `..` left to the OS, as it will read it
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            return f"{probe} is a dangling symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:  # resolved: Python 3.12's mkdtemp returns its folder with `link/..` removed by name, not as the OS went
        os.rmdir(tempfile.mkdtemp(prefix=".redrafter-probe-", dir=probe.resolve()))
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def named_path(path: Path | str) -> Path:
    """`path` with its parent resolved (symbolic links followed, as the OS will) and its own name kept (`.` and
    `..` resolved too): the folder an output will really be written as, named before it exists. A link itself is
    followed: the folder it names is the output, written through it (as OutputFile writes the file a link names), its
    partial beside that folder (renamed on one file system); the link stays."""
    path = Path(path)
    return path.resolve() if path.name in ("", ".", "..") or path.is_symlink() else path.parent.resolve() / path.name


def is_within(path: Path | str, folder: Path | str) -> bool:
    """Whether `path` is `folder` or lies inside it, either made or not yet: by resolved names, and by identity (device
    and inode) where they exist, as two names of one folder resolve to neither (`Drafter` and `drafter` on a
    case-insensitive file system, macOS's or Windows' default; a bind mount). A `folder` not made yet is its nearest
    existing folder, compared so, and the names below it, compared case-blind where that folder's own name is found
    under its other case (its file system ignores case; taken to hold for the folders made in it), exactly where not
    or where its name has no letters to tell (`/`, `C:\\`): there two new names that differ in case are told apart.
    A `path` whose first name below that folder exists is not inside the new one (which would be found then)."""
    path = Path(path).resolve()
    base, rest = Path(folder).resolve(), []
    while not os.path.exists(base) and base.parent != base:  # (False, not an error, where a folder cannot be read)
        base, rest = base.parent, [base.name, *rest]
    try:
        key = base.stat()
    except OSError:
        key = None
    for p in (path, *path.parents):
        if p == base or (key is not None and key.st_ino and _same_stat(p, key)):  # no ids (FAT): every inode is 0
            below = path.relative_to(p).parts[:len(rest)]
            if len(below) != len(rest) or (rest and os.path.lexists(p / below[0])):  # an existing name is not the new
                return False                                                        # one: that would be found under it
            fold = str.casefold if rest and key is not None and _case_blind(base, key) else str
            return [fold(n) for n in below] == [fold(n) for n in rest]
    return False


def _same_stat(p: Path, key: os.stat_result) -> bool:
    try:
        return os.path.samestat(p.stat(), key)
    except OSError:
        return False


def _case_blind(folder: Path, key: os.stat_result) -> bool:
    """Whether `folder` (`key`: its stat) is found under its name's other case (`Out` for `out`): a case-insensitive
    file system. Not through a symbolic link so named (`PROJ` -> `proj` on a case-sensitive disk)."""
    other = folder.with_name(folder.name.swapcase()) if folder.name else folder
    try:
        return other != folder and os.path.samestat(other.lstat(), key)
    except OSError:
        return False


def same_file(a: Path, b: Path) -> bool:
    """Whether output files `a` and `b` are one file, either written or not yet (is_within: by identity where it
    exists, as one name in one folder reached under two names: a bind mount; `Out/r.png` and `out/R.png` on a
    case-insensitive disk)."""
    return is_within(a, b)


def another(option: str) -> str:
    """`another --output`, or for an option a --config preset set (presets.as_given: `the --config preset's output`),
    `another path for the --config preset's output`."""
    return f"another {option}" if option.startswith("-") else f"another path for {option}"


def outside(option: str, folder) -> str:
    """`an --output outside FOLDER`, or `a path outside FOLDER for the --config preset's output` (`another`)."""
    return f"an {option} outside {folder}" if option.startswith("-") else f"a path outside {folder} for {option}"


def check_output_folder(dest: Path, force: bool, inputs: Iterable[Path | str] = (), option: str = "--output") -> None:
    """Refuse, before any work, an output folder that cannot be (re)written: an existing one without --force, a
    file, one that is or holds an input (replacing it would delete the input), one inside an input folder (a drafter
    among its base's files, a checkpoint in its drafter's folder) or inside an earlier output
    (refuse_inside_earlier_output), an earlier output that also holds the user's own
    files (users_entries: replacing the folder would delete them), or one in an unwritable place."""
    given = Path(dest)
    if given.is_symlink():
        given = dest = linked_folder(given, option)  # written beside the folder it names
    else:
        dest = named_path(given)
    restore_replaced(dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{option} {dest} exists and is a file: pass a folder path")
    target = dest.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if is_within(source, target):
            raise ConfigError(f"{option} {dest} is (or holds) the input {item}: replacing it would delete the input, "
                              f"choose {another(option)}")
        if source.is_dir() and is_within(target, source):
            raise ConfigError(f"{option} {dest} is inside the input folder {item}: the output would sit among the "
                              f"files it is made from; choose {outside(option, item)}")
    refuse_inside_earlier_output(dest, option)
    if dest.exists() and not force:
        raise ConfigError(f"output folder {dest} already exists: pass --force to replace it, or choose "
                          f"{another(option)}")
    if dest.exists() and is_within(Path.cwd(), target):
        raise ConfigError(f"{option} {dest} is (or holds) the current folder: replacing it would leave this shell in a "
                          f"deleted folder; run from elsewhere, or choose {another(option)}")
    foreign = dest.exists() and foreign_entry(dest)
    if foreign:
        raise ConfigError(f"{option} {dest} holds {foreign}, and it is not an earlier ReDrafter output: --force "
                          f"replaces only those and empty folders; choose {another(option)} or empty it yourself")
    mine = dest.exists() and users_entries(dest)
    if mine:
        raise ConfigError(f"{option} {dest} is an earlier ReDrafter output but also holds {name_list(mine, 3)}, which "
                          f"no ReDrafter tool writes there: replacing the folder would delete them; move them out of "
                          f"it, or choose {another(option)}")
    why = writable_folder(given.parent)  # as typed: a dangling link on the way is refused, not followed
    if why:
        raise ConfigError(f"cannot write in {dest.parent} ({why}): choose {another(option)}")


def linked_folder(link: Path, option: str = "--output") -> Path:
    """The folder the symbolic link `link` names, made or not yet (a link to a folder not made is a way to point the
    output at other storage: it is made there). Refused where it cannot be: a loop of links, or a folder inside one
    that does not exist (storage not mounted; nothing is made on the disk under its mount point)."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop (Python 3.13 returns it unresolved: a link still)
        target = link
    if target.is_symlink():
        raise ConfigError(f"{option} {link} is a symbolic link that leads back to itself: pass {another(option)}")
    if not target.exists() and not target.parent.is_dir():
        raise ConfigError(f"{option} {link} is a symbolic link to {os.readlink(link)}, in {target.parent}, which does "
                          f"not exist: make {target.parent} (or mount the storage it is on), or pass {another(option)}")
    return target


def refuse_inside_earlier_output(dest: Path, option: str = "--output") -> None:
    """Refuse an output folder or file inside an earlier drafter, checkpoint or engine folder (`earlier_output_kind` of
    the nearest folder above it that is one): `train --output d1/sub` wrote d1/sub and d1/sub.train-state.pt inside the
    drafter d1 (`acceptance --output-json d1/a.json`, d1/a.json), and replacing d1 (`--force`, `--resume`) was then
    refused for holding them (users_entries)."""
    for folder in named_path(dest).parents:
        kind = earlier_output_kind(folder)
        if kind:
            what = "ReDrafter output" if kind == "ours" else f"{kind} folder"
            raise ConfigError(f"{option} {dest} is inside {folder}, an earlier {what}: writing {folder} again (--force) "
                              f"would then be refused for what this puts there; choose {outside(option, folder)}")


def restore_replaced(dest: Path) -> None:
    """Put back the earlier output that a replace (`--force`) killed between its two renames had moved aside
    (`.{name}.partial-{pid}-*-old`, `dest` missing): that run never finished, so the earlier output is still the
    output, and the sweep would have deleted it."""
    if dest.exists() or dest.is_symlink() or not dest.parent.is_dir():
        return
    for old in sorted(dest.parent.glob(f".{glob.escape(dest.name)}{PARTIAL_MARK}*-old")):
        pid = old.name.rsplit(PARTIAL_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and _writing(old, int(pid)):
            continue  # a live run between its two renames
        with contextlib.suppress(OSError):
            old.rename(dest)
            log.warning("put back %s, which an interrupted run (process %s) was replacing", dest, pid)
            return


# What an earlier output holds besides its config.json, by kind (regular expressions, matched whole): the names its
# writers write and no more. Every version of this toolkit wrote these (train's state file and the quickstart's caches
# always went beside the folder, never in it), as do the other tools whose outputs --force replaces: Apple's trainer
# (save_pretrained: model.safetensors or its five-digit shards and index, pytorch_model.bin or its shards and index;
# model.pt), TensorRT-LLM's convert_checkpoint.py and trtllm-build (rank{r} as f"rank{r}" writes it: no leading zero).
# Anything else is the user's, which replacing the folder would delete: globs (rank*.safetensors) took the user's
# rank0-before-my-finetune.safetensors for ours.
_RANK, _SHARD = "rank(?:0|[1-9][0-9]*)", "-[0-9]{5}-of-[0-9]{5}"
OUTPUT_LAYOUTS = {
    "drafter": (r"model\.safetensors", r"model\.pt", rf"model{_SHARD}\.safetensors", r"model\.safetensors\.index\.json",
                rf"pytorch_model(?:{_SHARD})?\.bin", r"pytorch_model\.bin\.index\.json"),
    "checkpoint": (rf"{_RANK}\.safetensors",),  # convert.py's
    "engine": (rf"{_RANK}\.engine", r"model\.cache", r"redrafter_trt\.json"),  # build.TIMING_CACHE and PRODUCER_FILE
}


def earlier_output_kind(folder: Path) -> str | None:
    """Which earlier output `folder` is, by its config.json: an engine (TensorRT-LLM's config of a ReDrafter
    model), a checkpoint (a ReDrafter architecture), a drafter (Apple's model_type) or, with only a redrafter-trt
    `producer` block, "ours"; None: none of these (or no readable config.json)."""
    try:
        raw = json_loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    from .drafter import MODEL_TYPE

    producer = raw.get("producer") if isinstance(raw.get("producer"), dict) else {}
    pretrained = raw.get("pretrained_config") if isinstance(raw.get("pretrained_config"), dict) else {}
    if str(pretrained.get("architecture") or "").startswith("ReDrafterFor"):
        return "engine"
    if str(raw.get("architecture") or "").startswith("ReDrafterFor"):
        return "checkpoint"
    if raw.get("model_type") == MODEL_TYPE:
        return "drafter"
    return "ours" if str(producer.get("name", "")).startswith("redrafter-trt") else None


def foreign_entry(folder: Path) -> str | None:
    """None when `folder` is empty or an earlier output of this toolkit or of TensorRT-LLM's ReDrafter tools (its
    config.json has a redrafter-trt `producer`, or is a ReDrafter checkpoint, engine or Apple drafter config); else
    the name of one entry it holds, for the refusal (a mistyped --output must not delete a project)."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or earlier_output_kind(folder):
        return None
    return next((e for e in entries if e != "config.json"), entries[0])


def users_entries(folder: Path) -> list[str]:
    """The entries of an earlier output `folder` that its kind's writers never put there (OUTPUT_LAYOUTS; a
    folder of only a `producer` block: any kind's), such as the user's notes or eval results: replacing the folder
    would delete them."""
    kind = earlier_output_kind(folder)
    ours = re.compile("|".join(OUTPUT_LAYOUTS.get(kind) or [p for layout in OUTPUT_LAYOUTS.values() for p in layout]))
    return sorted(p.name for p in folder.iterdir() if p.name != "config.json" and not ours.fullmatch(p.name))


def partial_prefix(dest: Path) -> str:
    """The hidden sibling name this process writes `dest` under: `.{name}.partial-{pid}-`."""
    return f".{Path(dest).name}{PARTIAL_MARK}{os.getpid()}-"


def partial_dir(dest: Path, tag: str = "") -> Path:
    """A new hidden folder `.{name}.partial-{pid}-{tag}*` beside `dest` (named_path: beside the folder a link names,
    where the sweep looks), which the sweep leaves while this process runs."""
    dest = named_path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(dest) + tag, dir=dest.parent))
    _MADE.add(tmp.name)
    return tmp


@contextlib.contextmanager
def scratch_dir(dest: Path, tag: str) -> Iterator[Path]:
    """partial_dir for a run's intermediate files (convert's FP8 base), removed when done, with the parent folders
    it made for it unless the output went in them. Killed runs' partials are removed first (remove_stale_partials):
    left until atomic_output's sweep, an FP8 rerun after a kill held two exported bases on disk."""
    given, dest = dest, named_path(dest)
    made = [p for p in dest.parents if not p.exists()]  # nearest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(given)
    tmp = partial_dir(dest, tag)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)


def remove_stale_partials(dest: Path) -> None:
    """Remove the `.{name}.partial-{pid}-*` folders of runs that are gone (killed); those of a live process,
    this one's FP8 scratch or a concurrent run's output, stay. For a link: beside the folder it names (partial_dir),
    and beside the link under its own name, where earlier versions made them."""
    dest = Path(dest)
    for place in (named_path(dest), *([dest] if dest.is_symlink() else [])):
        sweep_partials(place.parent, glob.escape(place.name))


def sweep_partials(folder: Path, name_glob: str) -> None:
    """Remove the hidden partials `.{name}.partial-{pid}[-*]` (files or folders) in `folder`, for names matching
    `name_glob`, whose writer `pid` is no longer running on this host: a killed run's (kill -9, the OOM killer), which
    nothing else removes (an 8B base's cached hidden states: ~100 GB), or one named with this process's id that it did
    not make. A live process's (another torchrun rank, a concurrent run, this one) stays. Each removal is logged with
    the space it freed."""
    for stale in sorted(Path(folder).glob(f".{name_glob}{PARTIAL_MARK}*")):
        pid = stale.name.rsplit(PARTIAL_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and _writing(stale, int(pid)):
            continue
        size = disk_size(stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()
        if not stale.exists():
            log.warning("removed %s, left by an interrupted run (process %s is gone): %.2f GiB freed", stale,
                        pid if pid.isdigit() else "unknown", size / 2 ** 30)


def _writing(partial: Path, pid: int) -> bool:
    """Whether process `pid`, named in `partial`, may still be writing it: it runs, and when it is this process,
    `partial` is one it made."""
    return _alive(pid) and (pid != os.getpid() or partial.name in _MADE)


def disk_size(path: Path) -> int:
    """Bytes in a file, or in a folder's files (links not followed); 0 where unreadable."""
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this host, asked with signal 0; where signal 0 is Ctrl-C (Windows' CTRL_C_EVENT:
    os.kill would interrupt the console's programs, this one included) nothing is asked and it counts as running."""
    if getattr(signal, "CTRL_C_EVENT", None) == 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


@contextlib.contextmanager
def atomic_output(dest: Path, force: bool, inputs: Iterable[Path | str] = (),
                  option: str = "--output") -> Iterator[Path]:
    """Yield a hidden sibling folder to write into; on success it replaces `dest`, on any failure it is removed.
    `check_output_folder` first (inputs: the folders and files read to make it), and again at the end where `dest`
    exists then: another run may have written it meanwhile (replaced only with `force`), the user put files in it.

    An interrupted run (even SIGKILL) leaves only `.{name}.partial-{pid}-*`, never a folder named `dest`;
    the next run removes it.
    """
    check_output_folder(dest, force, inputs, option)
    given, dest = dest, named_path(dest)
    made = [p for p in dest.parents if not p.exists()]  # nearest first: removed again if the write fails
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(given)
    tmp = partial_dir(dest)
    done = False
    try:
        with named_failures(dest):
            yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it owner-only; a folder made by mkdir, as the files in it
        if os.path.lexists(dest):
            recheck_output_folder(dest, force, inputs, option)
            _replace(dest, tmp)
        else:
            _rename_new(tmp, dest)
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:  # a failed write leaves no empty folders either
            _remove_empty(made)


def recheck_output_folder(dest: Path, force: bool, inputs: Iterable[Path | str], option: str) -> None:
    """check_output_folder as a run ends, when `dest` was written meanwhile or changed since the run began: its
    refusal says so, and that this run's output is not kept."""
    try:
        check_output_folder(dest, force, inputs, option)
    except ConfigError as e:
        raise ConfigError(f"{e} (found as this run ended: its output is removed)") from None


class WrittenThenInterrupted(KeyboardInterrupt):
    """A Ctrl-C that came after an output was written whole, while the folder it replaced was removed: the command
    stops, and its caller knows the output is in place (train then does not say to resume to write it)."""


def _rename_new(tmp: Path, dest: Path) -> None:
    """Rename the folder `tmp` to `dest`, which does not exist. A Ctrl-C during the rename is held until it is done,
    then goes on as WrittenThenInterrupted, said (a plain interrupt once `dest` was written read as one before it:
    train said to pass --resume to write the drafter already written)."""
    written = False
    try:
        with uninterrupted():
            tmp.rename(dest)
            written = True
    except KeyboardInterrupt:
        if not written:
            raise
        log.warning("%s is written whole: the Ctrl-C came as it was renamed into place", dest)
        raise WrittenThenInterrupted from None


def _replace(dest: Path, tmp: Path) -> None:
    """Put the folder `tmp` in place of the existing `dest`, then remove the one it replaced: the two swapped in one
    step where the system can (exchange.py: `dest` holds a whole output throughout; killed after, the earlier output
    is left under the partial's name, which the next run sweeps), else `dest` renamed aside and `tmp` in. The renames
    are instant and run whole (uninterrupted): a Ctrl-C between them left no `dest` (after the first), made an OSError
    of putting the old one back over the new one (as the second returned), or was a plain interrupt once `dest` was
    written (after it). One after them comes after `dest` was written whole: `_removed_after_interrupt`."""
    # a partial's name, unique to this write: a run killed while removing it (an 8B checkpoint's) leaves it for the
    # next run's sweep, and a killed run's leftover of the same process id (a container's) is no obstacle (the fixed
    # `.NAME.old-PID` was kept forever, and made a later run with that id fail at its end)
    old = dest.with_name(f"{tmp.name}-old")
    gone = old.with_name(f"{tmp.name}-gone")  # no longer one restore_replaced puts back, even half deleted
    written = False
    try:
        with uninterrupted():
            if exchange.exchanged(tmp, dest):
                old = tmp  # the earlier output, now under the partial's name
            else:
                dest.rename(old)
                try:
                    tmp.rename(dest)
                except BaseException:
                    old.rename(dest)
                    raise
            written = True
            old.rename(gone)
        _remove(gone)
    except KeyboardInterrupt:
        if not written:
            raise
        _removed_after_interrupt(gone, dest)


def _removed_after_interrupt(gone: Path, dest: Path) -> None:
    """After a Ctrl-C that came once `dest` was written whole, while the folder it replaced (renamed `gone`) was
    removed (an 8B checkpoint's removal takes a while): the removal is finished, that said, and the interrupt goes on
    as WrittenThenInterrupted (the command stops). A second one (or the SIGTERM after it) leaves the rest to the next
    run's sweep (`remove_stale_partials`), and is said too."""
    with contextlib.suppress(KeyboardInterrupt):
        _remove(gone)
    log.warning("%s is written whole: the Ctrl-C came after, while the folder it replaced was removed", dest)
    if gone.exists():
        log.warning("%s is left: the next write of %s removes it", gone, dest)
    raise WrittenThenInterrupted from None


def _remove(gone: Path) -> None:
    """Remove the output a replace put aside: a folder, or a link put at the output's path while the run wrote it
    (rmtree refuses a link, and it was left as `.NAME.partial-*-gone`)."""
    if gone.is_symlink():
        gone.unlink()
    else:
        shutil.rmtree(gone, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run made, nearest first, up to the first one something else went in."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # an output (this run's, or another run's) is in it
            break

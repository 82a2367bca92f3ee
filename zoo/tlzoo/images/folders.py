"""Finding the labelled files: an ImageFolder tree (one folder per class) or a ``path,label`` CSV, with what
is not an image, not readable or laid out oddly reported rather than guessed at."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from ..files import hash_file
from .decode import is_image_file
from .sets import ImageList, Sample


def scan(source: Path, *, exclude: tuple[Path, ...] = (), ignored: list[str] | None = None) -> list[Sample]:
    """Find labelled images: a folder with one sub-folder per class, or a ``path,label`` CSV.

    In a folder, an image is a file with a suffix Pillow can open (:func:`tlzoo.decode.image_suffixes`) at any
    depth of its class folder. Hidden files and folders (a leading dot) are skipped, and so is anything under
    ``exclude`` (the run's output folder, tlzoo's cache). Symbolic links are followed, to folders and files
    alike, each real folder once. Files passed over for their suffix are appended to ``ignored``. A name that
    is not valid UTF-8 is refused here, in one line, before any work."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path {source} does not exist")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source} is a file but not a .csv; give a folder with one sub-folder per class, or a CSV")
        return _scan_csv(source)
    root = source.resolve()
    skip = {Path(p).resolve() for p in exclude}
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")
                        and not _loops_back(d, root) and d.resolve() not in skip)  # fmt: skip
    if not class_dirs:
        raise DataError(
            f"{source} has no class folders: expected one sub-folder per class, e.g. {source}/cat/1.jpg, {source}/dog/2.jpg"
        )
    samples: list[Sample] = []
    empty = []
    for d in class_dirs:
        files = sorted(_walk(d, skip, ignored))
        if not files:
            empty.append(shown(d.name))
        samples.extend(Sample(p, shown(d.name)) for p in files)
    if empty:
        raise DataError(f"class folder(s) with no images in {source}: {', '.join(empty)}")
    return samples


def image_files(folder: Path, ignored: list[str] | None = None) -> list[Path]:
    """Every image under ``folder`` by :func:`scan`'s rules (hidden skipped, links followed), sorted."""
    return sorted(_walk(folder, set(), ignored))


def _walk(folder: Path, skip: set[Path], ignored: list[str] | None) -> Iterator[Path]:
    """Every image under ``folder``, following symbolic links and visiting each real folder once."""
    seen: set[Path] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = Path(top).resolve()
        if real in seen or real in skip:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(top) / name
            if name.startswith(".") or not path.is_file():
                continue
            if is_image_file(path):
                yield path
            elif ignored is not None:
                ignored.append(str(path))


def same_files_in_two_classes(files: ImageList, budget: int = 256 << 20) -> list[list[str]]:
    """Groups of byte-identical files filed under different classes (a copy dropped in the wrong folder). Only
    files whose size another class also has are read, and at most ``budget`` bytes of them (uncompressed
    formats, where every file has the same size, would otherwise be read in full on every run)."""
    if files.labels.ndim == 2:  # a multi-label image has no one class to be filed under
        return []
    by_size: dict[int, list[int]] = {}
    for i, path in enumerate(files.paths):
        by_size.setdefault(os.stat(path).st_size, []).append(i)
    candidates = [(size, members) for size, members in by_size.items()
                  if len({int(files.labels[i]) for i in members}) > 1]  # fmt: skip
    if sum(size * len(members) for size, members in candidates) > budget:
        return []
    groups: dict[str, list[int]] = {}
    for _, members in candidates:
        for i in members:
            groups.setdefault(hash_file(files.paths[i]), []).append(i)
    return [[files.paths[i] for i in g] for g in groups.values() if len({int(files.labels[i]) for i in g}) > 1]


SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


def layout_warnings(classes: list[str]) -> list[str]:
    """What looks wrong about a folder's classes without being an error: split folders taken for classes, and
    class names that differ only in case or Unicode normalization (``Red``/``red``, ``café`` NFC/NFD)."""
    import unicodedata

    out = []
    if len(classes) >= 2 and {c.lower() for c in classes} <= SPLIT_FOLDER_NAMES:
        out.append(f"the classes are {', '.join(classes)}: this looks like a folder of splits, one level too high. "
                   f"Give --data FOLDER/train and --val FOLDER/val (and --test FOLDER/test)")  # fmt: skip
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(unicodedata.normalize("NFC", c).casefold(), []).append(c)
    for names in groups.values():
        if len(names) > 1:
            shown = ", ".join(ascii(n) for n in names)
            out.append(f"class folders {shown} differ only in case or Unicode normalization: they are trained as "
                       f"{len(names)} different classes; merge them if they are one")  # fmt: skip
    return out


def shown(name: str | Path) -> str:
    """A file name as people and UTF-8 files see it: a name that is not UTF-8 (Latin-1 bytes from an old archive or
    a Windows share; Python holds them as surrogate escapes) with those bytes as backslash escapes, ``caf\\xe9.jpg``.
    A class folder so named becomes a label so written: labels travel in JSON and ONNX metadata, which are UTF-8."""
    text = str(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def raw_bytes(path: str) -> str:
    """The column split.csv keeps beside ``path`` for a name that is not UTF-8: its bytes percent-encoded
    (RFC 3986, ``/`` kept), which :func:`from_raw` turns back into the same name; empty for a UTF-8 name."""
    from urllib.parse import quote_from_bytes

    return "" if shown(path) == path else quote_from_bytes(os.fsencode(path), safe="/")


def from_raw(raw: str) -> str:
    """The name :func:`raw_bytes` encoded, byte for byte."""
    from urllib.parse import unquote_to_bytes

    return os.fsdecode(unquote_to_bytes(raw))


def ignored_text(ignored: list[str]) -> str:
    """``3 files: .heic (2), .txt (1)``: what a scan passed over for its suffix."""
    suffixes = Counter(Path(p).suffix.lower() or "(no suffix)" for p in ignored)
    return f"{len(ignored)} file(s) that are not images Pillow opens here, by suffix: " + ", ".join(
        f"{k} ({v})" for k, v in suffixes.most_common())


def _loops_back(folder: Path, root: Path) -> bool:
    """A symlink to the data root or into it is not a class: its images belong to other classes already."""
    if not folder.is_symlink():
        return False
    target = folder.resolve()
    return target == root or root in target.parents


def _scan_csv(path: Path) -> list[Sample]:
    """Read as Excel writes it too: a UTF-8 byte-order mark is accepted, quoted fields keep their commas.

    Three forms: ``path,label`` (one class an image); ``path,labels`` with ``;``-separated labels (multi-label,
    an empty cell being an image with none); ``path`` and one 0/1 column per label (one-hot multi-label, the
    headers, case kept, the labels' names)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [c.strip() for c in reader.fieldnames or []]
            columns = [c.lower() for c in header]
            form = _csv_form(path, header, columns)
            rows = []
            for row in reader:
                if None in row:  # more fields than the header: an unquoted comma
                    raise DataError(
                        f"{path}, line {reader.line_num}: more fields than the header ({', '.join(reader.fieldnames or [])});"
                        f" put a label or path that contains a comma in double quotes"
                    )
                rows.append({k.strip() if form == "one-hot" else k.strip().lower(): (v or "").strip()
                             for k, v in row.items() if k})  # fmt: skip
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8 (Excel: 'CSV UTF-8')") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV: {exc}") from None
    path_key = header[columns.index("path")] if form == "one-hot" else "path"
    samples, missing = [], []
    first: dict[Path, tuple[int, str]] = {}
    for line, row in enumerate(rows, start=2):
        if form == "label":
            if not row.get("path") or not row.get("label"):
                raise DataError(f"{path}, line {line}: empty path or label")
            label, tags = row["label"], None
        else:
            if not row.get(path_key):
                raise DataError(f"{path}, line {line}: empty path")
            tags = _tags(path, line, row["labels"]) if form == "labels" else _one_hot(path, line, row, header, path_key)
            label = ";".join(tags)
        name = row[path_key]
        image = (path.parent / name).resolve()
        seen = first.setdefault(image, (line, label))
        if seen[1] != label:
            raise DataError(f"{path}, line {line}: {name} is labelled {label!r} here and {seen[1]!r} on "
                            f"line {seen[0]}; give each image one label (several labels an image go in one row, "
                            f"in a 'labels' column: beach;sunset)")  # fmt: skip
        if not image.is_file():
            missing.append(name)
        samples.append(Sample(image, label, tags))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path} names {len(missing)} file(s) that do not exist (relative to {path.parent}): {shown}")
    if not samples:
        raise DataError(f"{path} lists no images")
    return samples


def _csv_form(path: Path, header: list[str], columns: list[str]) -> str:
    """``label``, ``labels`` or ``one-hot``, from the header (refused when it is none of them)."""
    if "path" not in columns:
        raise DataError(f"{path} must have a header with a 'path' column and a 'label' column (one class an image), "
                        f"a 'labels' column (several, a;b) or one 0/1 column per label; found {header}")  # fmt: skip
    if "label" in columns and "labels" in columns:
        raise DataError(f"{path} has both a 'label' and a 'labels' column: keep 'label' for one class an image, or "
                        f"'labels' for several (a;b)")  # fmt: skip
    if "label" in columns:
        return "label"
    if "labels" in columns:
        return "labels"
    if len(header) < 2:
        raise DataError(f"{path} has a 'path' column and no labels: add a 'label' column (one class an image), a "
                        f"'labels' column (several, a;b) or one 0/1 column per label")  # fmt: skip
    names = [h for h in header if h.lower() != "path"]
    if any(not h for h in names) or len(set(names)) < len(names):
        raise DataError(f"{path}: every one-hot column needs a name of its own; found {header}")
    return "one-hot"


def _tags(path: Path, line: int, cell: str) -> tuple[str, ...]:
    """A ``labels`` cell: ``;``-separated, spaces around each stripped, repeats once, case kept; empty is none."""
    if not cell.strip():
        return ()
    names = [part.strip() for part in cell.split(";")]
    if any(not name for name in names):
        raise DataError(f"{path}, line {line}: the labels {cell!r} hold an empty name (a ';' with nothing on one "
                        f"side); separate labels with one ';' (beach;sunset)")  # fmt: skip
    return tuple(sorted(set(names)))


def _one_hot(path: Path, line: int, row: dict[str, str], header: list[str], path_key: str) -> tuple[str, ...]:
    tags = []
    for name in header:
        if name == path_key:
            continue
        value = row.get(name, "")
        if value not in ("0", "1"):
            raise DataError(f"{path}, line {line}: column {name!r} holds {value!r}; a one-hot CSV's columns other "
                            f"than 'path' hold only 0 or 1. For class names, the CSV needs a 'label' column (one "
                            f"class an image) or a 'labels' column (several, a;b)")  # fmt: skip
        if value == "1":
            tags.append(name)
    return tuple(sorted(tags))

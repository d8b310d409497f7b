"""Image sequences as TDs name them: ``line/####.png``, ``line/%04d.png``, ``line/*.png``, ``line/``.

A manifest names the frames of a cut by a pattern relative to the cut folder.  Accepted forms:

==========================  ==========================================================
``line/####.png``           padded: each ``#`` is ONE digit (``####`` = 4, ``#`` = 1)
``line/@@@@.png``           same, each ``@`` is one digit
``line/%04d.png``           printf; ``%d`` is unpadded
``line/$F4.png``            Houdini; ``$F`` is unpadded
``line/name.1-24#.png``     fileseq's range form: frame spec + padding (here unpadded);
                            only frames of the spec are taken from disk
``line/*.png``              a glob: the frame is the last run of digits in the file name
                            (before the extension); all files must form one sequence
``line/``                   a folder holding exactly one image sequence
==========================  ==========================================================

Padding.  fileseq's default (``PAD_STYLE_HASH4``, the SPI/Katana/RV convention) reads one ``#``
as four digits, so ``####`` would mean 16.  Nuke, After Effects and Blender, the tools 2D
animation TDs use, read each ``#`` as one digit, so we parse with ``PAD_STYLE_HASH1`` everywhere:
``#`` and ``@`` are one digit each, and the range form ``name.1-24#.png`` is unpadded.  Padding is a
minimum width: frame 10000 in a ``####`` sequence is ``10000.png`` and is found; a file is part of
a sequence when its number written with the sequence's padding gives its name back exactly
(so ``7.png`` is not frame 7 of ``####.png``, whose frame 7 is ``0007.png``).  Negative frames
are written ``-001`` (sign inside the width), as fileseq and printf do.

The frame token goes right before the extension for fileseq to read it (``name.####.png``); a
token inside the name (``sh010_####_v2.png``, as :func:`discover_sequences` may report) is read
by a small fallback here.  :class:`FrameSequence` always stores its pattern in ``####`` form.

Discovery and globs do not use fileseq's grouping, because fileseq reads the hyphen of
``shot-0001.png`` as a minus sign (frame -1 of ``shot#####.png``); here the frame is the last run
of digits in the name and a hyphen before it is part of the name, so discovered frames are >= 0.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fileseq import PAD_STYLE_HASH1, FileSequence

from sketchcolor_cli.frames.spec import FrameSpecError, parse_frame_spec

__all__ = [
    "IMAGE_EXTENSIONS",
    "FrameSequence",
    "SequenceError",
    "discover_sequences",
    "find_sequence",
    "is_pattern",
    "sequence_path",
]

IMAGE_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".tga", ".dpx", ".exr", ".jpg", ".jpeg", ".psd"})

_GLOB_CHARS = re.compile(r"[*?\[]")
# A frame token anywhere in a file name (the fallback when it is not right before the extension).
# `@` counts only as a run standing on its own, so "logo@2x.png" stays a plain file name.
_INNER_TOKEN = re.compile(
    r"(?P<hash>#+)|(?<![0-9A-Za-z])(?P<at>@+)(?![0-9A-Za-z])|%(?P<printf>0?\d*)d|\$F(?P<houdini>\d*)(?![A-Za-z])"
)
# Globs and discovery: the frame number is the last run of digits in the stem.
_LAST_DIGITS = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<rest>\D*)$")
_MAX_LISTED = 8


class SequenceError(ValueError):
    """A sequence pattern that cannot be resolved; the message names pattern, folder and a fix."""


def _format_frame(frame: int, padding: int) -> str:
    return f"{frame:0{padding}d}"


@dataclass
class FrameSequence:
    """Frames of one image sequence that exist on disk.

    ``pattern`` is relative to ``base_dir`` (absolute if it was given absolute) and always in
    ``####`` form (one ``#`` per digit of padding); ``frames`` maps frame number -> existing file,
    sorted by frame.
    """

    pattern: str
    base_dir: Path
    frames: dict[int, Path] = field(default_factory=dict)
    padding: int = 4

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.frames = dict(sorted(self.frames.items()))

    def _require_frames(self) -> None:
        if not self.frames:
            raise SequenceError(f"sequence {self.pattern!r} in {self.base_dir} has no frames on disk")

    @property
    def first(self) -> int:
        self._require_frames()
        return next(iter(self.frames))

    @property
    def last(self) -> int:
        self._require_frames()
        return next(reversed(self.frames))

    @property
    def missing(self) -> list[int]:
        """Frame numbers between ``first`` and ``last`` that have no file."""
        if not self.frames:
            return []
        return [frame for frame in range(self.first, self.last + 1) if frame not in self.frames]

    def path_for(self, frame: int) -> Path:
        """The path frame ``frame`` has (or would have) in this sequence."""
        directory, name = _split_directory(self.pattern)
        runs = list(re.finditer(r"#+", name))
        if not runs:
            raise SequenceError(f"sequence pattern {self.pattern!r} has no '#' frame token; write e.g. line/####.png")
        token = runs[-1]
        filename = name[:token.start()] + _format_frame(frame, self.padding) + name[token.end():]
        return self.base_dir / directory / filename if directory else self.base_dir / filename


@dataclass(frozen=True)
class _Pattern:
    """A parsed non-glob pattern: ``directory/prefix<frame>suffix``."""

    directory: str  # posix, "" for the base folder itself
    prefix: str
    padding: int
    suffix: str
    declared: frozenset[int] | None  # frames named by the range form, else None

    @property
    def normalised(self) -> str:
        name = self.prefix + "#" * self.padding + self.suffix
        return f"{self.directory}/{name}" if self.directory else name

    def filename(self, frame: int) -> str:
        return self.prefix + _format_frame(frame, self.padding) + self.suffix


def _normalise_directory(directory: str) -> str:
    """``"./line/"`` -> ``"line"``, ``"."`` -> ``""`` (the base folder), ``"/abs/"`` -> ``"/abs"``."""
    normalised = PurePosixPath(directory).as_posix() if directory else ""
    return "" if normalised == "." else normalised


def _split_directory(pattern: str) -> tuple[str, str]:
    directory, separator, name = pattern.rpartition("/")
    if not separator:
        return "", name
    return _normalise_directory(directory or "/"), name


def _inner_token_padding(match: re.Match[str]) -> int:
    if match["hash"] is not None:
        return len(match["hash"])
    if match["at"] is not None:
        return len(match["at"])
    digits = match["printf"] if match["printf"] is not None else match["houdini"]
    return max(int(digits), 1) if digits else 1


@functools.lru_cache(maxsize=512)
def _parse_name(name: str) -> tuple[str, int, str, str] | None:
    """``(prefix, padding, suffix, range_text)`` of a file name with a frame token, else None.
    Remembered: fileseq's grammar parser takes about a millisecond a name, and a plan names each
    frame's line art, masks and outputs through the same few patterns."""
    sequence = FileSequence(name, pad_style=PAD_STYLE_HASH1)
    token, basename, extension = sequence.padding(), sequence.basename(), sequence.extension()
    # fileseq also "finds" padding in a plain name such as name.0001.png; only a token that is
    # literally written before the extension counts.
    if token and name.startswith(basename) and name.endswith(token + extension):
        range_text = name[len(basename):len(name) - len(token) - len(extension)]
        padding = FileSequence.getPaddingNum(token, pad_style=PAD_STYLE_HASH1)
        return basename, padding, extension, range_text
    matches = list(_INNER_TOKEN.finditer(name))
    if not matches:
        return None
    if len(matches) > 1:
        raise SequenceError(
            f"{name!r} has more than one frame token ({', '.join(m[0] for m in matches)}); keep only one, "
            "e.g. name.####.png"
        )
    token_match = matches[0]
    return name[:token_match.start()], _inner_token_padding(token_match), name[token_match.end():], ""


def _parse_pattern(pattern: str, base_dir: Path) -> _Pattern:
    directory, name = _split_directory(pattern)
    parsed = _parse_name(name)
    if parsed is None:
        nothing_there = "" if (base_dir / pattern).exists() else " (and nothing of that name exists there)"
        raise SequenceError(
            f"{pattern!r} (in {base_dir}) names one file, not a sequence{nothing_there}; write the frame "
            "number as #### (one # per digit), %04d or $F4, e.g. line/####.png, or give a glob or a folder"
        )
    prefix, padding, suffix, range_text = parsed
    declared = None
    if range_text:
        try:
            declared = frozenset(parse_frame_spec(range_text))
        except FrameSpecError as error:
            raise SequenceError(f"frame range in pattern {pattern!r} (in {base_dir}): {error}") from error
    return _Pattern(directory, prefix, padding, suffix, declared)


def is_pattern(text: str) -> bool:
    """Whether ``text`` names a sequence (frame token, glob, or folder ending in '/') not one file."""
    if text.endswith("/") or _GLOB_CHARS.search(text):
        return True
    try:
        return _parse_name(_split_directory(text)[1]) is not None
    except SequenceError:  # several tokens: still meant as a sequence, just badly written
        return True


def _files_in(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_file())


def _listing_hint(folder: Path) -> str:
    try:
        names = [name for name in _files_in(folder) if not name.startswith(".")]
    except OSError:
        return ""
    if not names:
        return "; the folder is empty"
    shown = ", ".join(names[:_MAX_LISTED]) + (", ..." if len(names) > _MAX_LISTED else "")
    return f"; files there: {shown}"


def _describe(sequence: FrameSequence) -> str:
    count = len(sequence.frames)
    return f"{sequence.pattern} ({count} frame{'' if count == 1 else 's'})"


def _find_by_pattern(pattern: str, base_dir: Path) -> FrameSequence:
    parsed = _parse_pattern(pattern, base_dir)
    folder = base_dir / parsed.directory
    if not folder.is_dir():
        raise SequenceError(f"pattern {pattern!r}: folder {folder} does not exist; check the path in the manifest")
    number = re.compile(re.escape(parsed.prefix) + r"(-?\d+)" + re.escape(parsed.suffix))
    frames: dict[int, Path] = {}
    for name in _files_in(folder):
        match = number.fullmatch(name)
        if match is None:
            continue
        frame = int(match[1])
        # The number written with our padding must give the name back: 0007.png is frame 7 of
        # ####.png, 7.png and 00007.png are not (they belong to sequences with other padding).
        if parsed.filename(frame) != name:
            continue
        if parsed.declared is not None and frame not in parsed.declared:
            continue
        frames[frame] = folder / name
    if not frames:
        expected = ", ".join(parsed.filename(frame) for frame in (1, 2))
        raise SequenceError(
            f"pattern {pattern!r} matches no frames in {folder} (expected names like {expected})"
            f"{_listing_hint(folder)}; fix the pattern or its padding (one # per digit)"
        )
    return FrameSequence(parsed.normalised, base_dir, frames, parsed.padding)


@dataclass
class _NumberedFile:
    directory: str
    name: str
    prefix: str
    digits: str
    suffix: str

    @property
    def frame(self) -> int:
        return int(self.digits)


def _numbered(directory: str, name: str) -> _NumberedFile | None:
    stem, extension = os.path.splitext(name)
    match = _LAST_DIGITS.match(stem)
    if match is None:
        return None
    return _NumberedFile(directory, name, match["prefix"], match["digits"], match["rest"] + extension)


def _is_padded(digits: str) -> bool:
    return len(digits) > 1 and digits.startswith("0")


def _split_by_padding(files: list[_NumberedFile]) -> list[tuple[int, list[_NumberedFile]]]:
    """Group files of one prefix/suffix by padding, so each group names its files back exactly.

    A zero-padded number fixes its group's padding; an unpadded number joins the widest padding
    it fits (10000 joins ####), and numbers narrower than every padding form an unpadded group.
    """
    paddings = sorted({len(item.digits) for item in files if _is_padded(item.digits)})
    groups: dict[int, list[_NumberedFile]] = {padding: [] for padding in paddings}
    unpadded: list[_NumberedFile] = []
    for item in files:
        if _is_padded(item.digits):
            groups[len(item.digits)].append(item)
            continue
        fitting = [padding for padding in paddings if padding <= len(item.digits)]
        if fitting:
            groups[max(fitting)].append(item)
        else:
            unpadded.append(item)
    if unpadded:
        groups[min(len(item.digits) for item in unpadded)] = unpadded
    return sorted(groups.items())


def _sequence_from(files: list[_NumberedFile], padding: int, base_dir: Path) -> FrameSequence:
    first = files[0]
    name = first.prefix + "#" * padding + first.suffix
    pattern = f"{first.directory}/{name}" if first.directory else name
    frames = {item.frame: base_dir / item.directory / item.name for item in files}
    return FrameSequence(pattern, base_dir, frames, padding)


def _group_sequences(files: list[_NumberedFile], base_dir: Path) -> list[FrameSequence]:
    by_name: dict[tuple[str, str, str], list[_NumberedFile]] = {}
    for item in files:
        by_name.setdefault((item.directory, item.prefix, item.suffix), []).append(item)
    sequences = []
    for group in by_name.values():
        for padding, members in _split_by_padding(group):
            sequences.append(_sequence_from(members, padding, base_dir))
    return sorted(sequences, key=lambda sequence: sequence.pattern)


def _looks_like_sequence(sequence: FrameSequence) -> bool:
    # A lone numbered file is a sequence only when its number is zero-padded (still/0001.png);
    # logo_v2.png or cover1.png are single files.
    if len(sequence.frames) >= 2:
        return True
    only = next(iter(sequence.frames.values()))
    numbered = _numbered("", only.name)
    return numbered is not None and _is_padded(numbered.digits)


def _image_files(folder: Path, relative: str) -> list[_NumberedFile]:
    found = []
    for name in _files_in(folder):
        if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        numbered = _numbered(relative, name)
        if numbered is not None:
            found.append(numbered)
    return found


def discover_sequences(folder: Path, recursive: bool = True) -> list[FrameSequence]:
    """All image sequences under ``folder`` (patterns relative to it), sorted by pattern.

    Image extensions: png, tif, tiff, tga, dpx, exr, jpg, jpeg, psd (any case).  Hidden files and
    folders are skipped.  A single numbered file counts only if its number is zero-padded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SequenceError(f"{folder} is not a folder; give the cut folder to search for image sequences")
    files: list[_NumberedFile] = []
    if recursive:
        for current, subfolders, _ in os.walk(folder):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            relative = Path(current).relative_to(folder).as_posix()
            files.extend(_image_files(Path(current), "" if relative == "." else relative))
    else:
        files = _image_files(folder, "")
    return [sequence for sequence in _group_sequences(files, folder) if _looks_like_sequence(sequence)]


def _find_in_folder(pattern: str, base_dir: Path) -> FrameSequence:
    directory = _normalise_directory(pattern.rstrip("/") or "/")
    folder = base_dir / directory
    if not folder.is_dir():
        raise SequenceError(f"folder {pattern!r} does not exist in {base_dir}; check the path in the manifest")
    sequences = [
        _sequence_from_relocated(sequence, directory, base_dir)
        for sequence in discover_sequences(folder, recursive=False)
    ]
    if len(sequences) == 1:
        return sequences[0]
    if not sequences:
        raise SequenceError(
            f"folder {pattern!r} in {base_dir} holds no image sequence{_listing_hint(folder)}; "
            "name the frames with a pattern such as line/####.png"
        )
    found = ", ".join(_describe(s) for s in sequences)
    raise SequenceError(
        f"folder {pattern!r} in {base_dir} holds {len(sequences)} image sequences: {found}; "
        "name the one to use with its pattern instead of the folder"
    )


def _sequence_from_relocated(sequence: FrameSequence, directory: str, base_dir: Path) -> FrameSequence:
    pattern = f"{directory}/{sequence.pattern}" if directory else sequence.pattern
    return FrameSequence(pattern, base_dir, sequence.frames, sequence.padding)


def _find_by_glob(pattern: str, base_dir: Path) -> FrameSequence:
    matches = sorted(
        relative for relative in glob.glob(pattern, root_dir=base_dir)
        if (base_dir / relative).is_file()
    )
    if not matches:
        directory = base_dir / _split_directory(pattern)[0]
        raise SequenceError(
            f"glob {pattern!r} matches no files in {base_dir}{_listing_hint(directory)}; fix the pattern"
        )
    files: list[_NumberedFile] = []
    without_number: list[str] = []
    for relative in matches:
        directory, name = _split_directory(Path(relative).as_posix())
        numbered = _numbered(directory, name)
        if numbered is None:
            without_number.append(relative)
        else:
            files.append(numbered)
    if without_number:
        raise SequenceError(
            f"glob {pattern!r} in {base_dir} matches files without a frame number: "
            f"{', '.join(without_number[:_MAX_LISTED])}; narrow the glob (e.g. line/*.png -> line/*_*.png) "
            "or move those files"
        )
    first_by_frame: dict[int, str] = {}
    for item in files:
        relative = f"{item.directory}/{item.name}" if item.directory else item.name
        if item.frame in first_by_frame:
            raise SequenceError(
                f"glob {pattern!r} in {base_dir}: {first_by_frame[item.frame]} and {relative} both give "
                f"frame {item.frame}; narrow the glob or remove one of them"
            )
        first_by_frame[item.frame] = relative
    sequences = _group_sequences(files, base_dir)
    if len(sequences) > 1:
        found = ", ".join(_describe(s) for s in sequences)
        raise SequenceError(
            f"glob {pattern!r} in {base_dir} matches {len(sequences)} sequences (different names or "
            f"padding): {found}; narrow the glob or name one with its pattern"
        )
    return sequences[0]


def _is_folder_pattern(pattern: str, base_dir: Path) -> bool:
    return pattern.endswith("/") or (not is_pattern(pattern) and (base_dir / pattern).is_dir())


def find_sequence(pattern: str, base_dir: Path) -> FrameSequence:
    """The frames of ``pattern`` (relative to ``base_dir``) that exist on disk."""
    base_dir = Path(base_dir)
    if not pattern or not pattern.strip():
        raise SequenceError(f"empty sequence pattern (in {base_dir}); write e.g. line/####.png")
    if _is_folder_pattern(pattern, base_dir):
        return _find_in_folder(pattern, base_dir)
    if _GLOB_CHARS.search(pattern):
        return _find_by_glob(pattern, base_dir)
    return _find_by_pattern(pattern, base_dir)


def sequence_path(pattern: str, base_dir: Path, frame: int) -> Path:
    """The path of ``frame`` in ``pattern`` (relative to ``base_dir``), whether or not it exists.

    Padding, printf, ``$F`` and range-form patterns are expanded without looking at the disk; a
    folder is first resolved to the one sequence in it.  Globs cannot name a new file and raise.
    """
    base_dir = Path(base_dir)
    if _is_folder_pattern(pattern, base_dir):
        return find_sequence(pattern, base_dir).path_for(frame)
    if _GLOB_CHARS.search(pattern):
        raise SequenceError(
            f"glob {pattern!r} (in {base_dir}) cannot name frame {frame}; use a pattern such as "
            "out/####.png, or resolve the glob with find_sequence(...).path_for(frame)"
        )
    parsed = _parse_pattern(pattern, base_dir)
    directory = base_dir / parsed.directory if parsed.directory else base_dir
    return directory / parsed.filename(frame)

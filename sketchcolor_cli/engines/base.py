"""The engine interface and registry.

An engine is built once from its settings (`Engine.load`) and then colours batches of
`WorkItem`s (`Engine.colorize`), returning one `Layers` per item. Engines know nothing of
manifests, files or workers: every pixel crosses this interface as a numpy array.

Pixel convention (one way for every engine): colour images are ``H x W x 4`` ``uint16`` sRGB
with straight alpha (an 8-bit value ``v`` is stored as ``v * 257``, so 8-bit palettes stay
exact); single-channel layers are ``H x W`` ``uint16``.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

FULL = 65535  # opaque alpha / white in the uint16 convention


@dataclass(frozen=True)
class Reference:
    """A coloured image that gives colours: a colour model sheet or a finished key frame."""

    character: str  # the character it belongs to ("" for the whole frame, e.g. a key frame)
    image: np.ndarray  # H x W x 4 uint16, the finished colours
    line: np.ndarray | None = None  # H x W x 4 uint16 line art of the same drawing, if known
    palette: dict[str, tuple[int, int, int]] | None = None  # named colours, uint16 RGB
    source: str = ""  # where it came from, for logs and errors
    # The cut's frame number when this is a key frame of the cut: the work item's own frame (its
    # finished colour), or the nearest key before or after it (colours to carry from, if useful).
    frame: int | None = None
    # Its foreground (H x W bool) when `sketchcolor masks` computed one (None: the engine decides).
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class PreviousResult:
    """A finished frame that the next frame carries its colours from."""

    frame: int
    line_art: np.ndarray  # H x W x 4 uint16
    fill: np.ndarray  # H x W x 4 uint16, the palette-exact fill layer of that frame
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    # The `Layers.handoff` that frame's engine wrote with its fill (from memory or from the file's
    # metadata: the same text either way); empty when unknown.
    handoff: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    """One frame to colour, with everything the engine may use."""

    frame: int
    line_art: np.ndarray  # H x W x 4 uint16, as drawn (paper white or transparent)
    references: tuple[Reference, ...]
    seed: int
    # Per-character foreground masks (H x W bool), keyed by character name; "background" too.
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    previous: PreviousResult | None = None
    background: np.ndarray | None = None  # H x W x 4 uint16 background reference, if any
    # Per-character engine setting overrides (manifest `characters[].engine.<engine>`) of the
    # characters in this frame, in manifest order; engines that use them document how.
    character_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What the engine's `prepare` computed for this frame (engine-private; None when not prepared).
    prepared: Any = None


@dataclass
class Layers:
    """What an engine returns for one frame."""

    color: np.ndarray  # H x W x 4 uint16: colour with the original lines on top
    fill: np.ndarray  # H x W x 4 uint16: palette-exact colour without lines
    line: np.ndarray  # H x W uint16: line alpha (where the lines were)
    review: np.ndarray  # H x W x 4 uint16: what an artist should check first
    stats: dict[str, Any] = field(default_factory=dict)  # small JSON-able facts for the log
    # H x W x 4 uint16: the colour with its shading, without lines (the diffusion engine's generated
    # colour); None for engines without shading, whose `shade` output is then their fill.
    shade: np.ndarray | None = None
    # Small text facts the next frame's engine needs about this one (keys `sketchcolor:handoff:*`):
    # written into the frame's files' metadata and handed back as `PreviousResult.handoff`.
    handoff: dict[str, str] = field(default_factory=dict)


class LayersPaintedLater(Layers):
    """Layers whose colour, line and review pictures are made when first read, by `paint_rest`
    (the engine's function of what it already decided). Nothing later frames need is in them, so
    a worker reads them in its writer thread, while the engine colours the next frame; a caller
    that reads them at once sees no difference."""

    _LATER = ("color", "line", "review")

    def __init__(
        self,
        fill: np.ndarray,
        paint_rest: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
        stats: dict[str, Any] | None = None,
        handoff: dict[str, str] | None = None,
    ) -> None:
        self.fill = fill
        self.stats = stats if stats is not None else {}
        self.shade = None
        self.handoff = handoff if handoff is not None else {}
        self._paint_rest: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = paint_rest
        self._painting = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet
        if name not in LayersPaintedLater._LATER:
            raise AttributeError(name)
        with self._painting:
            if self._paint_rest is not None:
                self.color, self.line, self.review = self._paint_rest()
                self._paint_rest = None
        return self.__dict__[name]


class EngineOutOfMemory(RuntimeError):
    """The engine ran out of (GPU) memory on a batch; the scheduler halves that worker's batch and
    retries. Workers treat any exception whose type is named ``OutOfMemoryError`` (torch.cuda's)
    the same way, without importing torch."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an engine's exception means "too big a batch" rather than "this frame is bad"."""
    return isinstance(error, EngineOutOfMemory) or type(error).__name__ == "OutOfMemoryError"


class EngineSettings(BaseModel):
    """Base of every engine's settings model; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Engine(ABC):
    """Load once, colorize batches."""

    name: ClassVar[str]
    settings_model: ClassVar[type[EngineSettings]] = EngineSettings
    # "none": every frame stands alone; "previous": frame N carries colours from frame N-1's
    # result (the plan orders such frames and the runner hands over `WorkItem.previous`).
    frame_dependency: ClassVar[Literal["none", "previous"]] = "none"
    # True: the engine runs best on a GPU; the scheduler starts one worker per visible GPU (and,
    # on a machine without one, a single CPU worker rather than one per core).
    uses_gpu: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def load(cls, settings: EngineSettings) -> "Engine":
        """Build the engine (load model files, warm up) once per worker."""

    @abstractmethod
    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        """Colour a batch of frames; one `Layers` per item, in order."""

    def prepare(self, item: WorkItem) -> WorkItem:
        """Work on one frame that needs no other frame's result (segmenting its line art, say).
        Workers call it from their reader thread, so it overlaps the colouring of the frame
        before; `colorize` must give the same result for an item that was not prepared. Returns
        the item, with `prepared` set if there is something to hand on. Default: nothing."""
        return item

    @classmethod
    def dependency_for(cls, settings: EngineSettings) -> Literal["none", "previous"]:
        """How frames depend on each other with these settings (default: the class's)."""
        return cls.frame_dependency

    def describe(self) -> str:
        """Model and version facts that go into each output's metadata."""
        return self.name


# name -> "module:Class"; modules are imported only when an engine is asked for, so heavy
# libraries (torch, diffusers, onnxruntime) never load for `--help` or the flat engine.
_REGISTRY: dict[str, str] = {
    "flat": "sketchcolor_cli.engines.flat:FlatEngine",
    "diffusion": "sketchcolor_cli.engines.diffusion:DiffusionEngine",
}
# Extra engines for processes this one starts (farm tasks, spawned workers): "name=module:Class,..."
ENGINES_ENV = "SKETCHCOLOR_ENGINES"


def _checked_target(name: str, target: str, where: str) -> str:
    module_name, _, class_name = target.partition(":")
    if not name or not module_name or not class_name:
        raise ValueError(f"{where}: engine {name!r} -> {target!r}; write name=package.module:ClassName")
    return target


def register_engine(name: str, target: str) -> None:
    """Make an extra engine known by name: ``register_engine("mine", "studio.engines:MyEngine")``.

    The module is imported only when the engine is used. Processes started later see it only
    through the ``SKETCHCOLOR_ENGINES`` environment variable (or `registered_engines()` handed to
    them, which is what the local workers do).
    """
    _REGISTRY[name] = _checked_target(name, target, "register_engine")


def _from_environment() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in os.environ.get(ENGINES_ENV, "").split(","))):
        name, _, target = entry.partition("=")
        found[name.strip()] = _checked_target(name.strip(), target.strip(), ENGINES_ENV)
    return found


def registered_engines() -> dict[str, str]:
    """Every engine name -> "module:Class" (built-in, registered, and from SKETCHCOLOR_ENGINES)."""
    return {**_from_environment(), **_REGISTRY}


def engine_names() -> list[str]:
    return sorted(registered_engines())


def engine_class(name: str) -> type[Engine]:
    try:
        target = registered_engines()[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known engines: {', '.join(engine_names())}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def to_rgba16(image: np.ndarray) -> np.ndarray:
    """Any image array (grey/RGB/RGBA; uint8, uint16 or float in [0, 1]) to H x W x 4 uint16."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    out = np.empty((height, width, 4), dtype=np.uint16)
    if channels == 4 and image.dtype == np.uint8:
        # The common case (8-bit RGBA files): v * 257 is the uint16 whose two bytes are both v, so
        # interleaving the bytes with themselves converts (OpenCV: several times faster than numpy).
        import cv2

        flat = np.ascontiguousarray(image).reshape(-1)
        return cv2.merge([flat, flat]).view(np.uint16).reshape(height, width, 4)
    if channels == 4 and image.dtype == np.uint16:
        np.copyto(out, image)
        return out
    colour = out[:, :, :3]
    alpha = out[:, :, 3:]
    source_colour = image[:, :, :1] if channels <= 2 else image[:, :, :3]
    source_alpha = image[:, :, 1:2] if channels == 2 else (image[:, :, 3:4] if channels >= 4 else None)
    # Written into `out` channel group by channel group: a 4K frame is converted without temporaries.
    for target, source in ((colour, source_colour), (alpha, source_alpha)):
        if source is None:
            target.fill(FULL)
        elif source.dtype == np.uint8:
            np.multiply(source, np.uint16(257), out=target, casting="unsafe")
        elif source.dtype == np.uint16:
            np.copyto(target, source)  # broadcasts grey over the three colour channels
        elif np.issubdtype(source.dtype, np.floating):
            scaled = np.clip(source, 0.0, 1.0) * FULL
            np.copyto(target, np.round(scaled), casting="unsafe")
        else:
            raise TypeError(f"unsupported pixel type {image.dtype}")
    return out

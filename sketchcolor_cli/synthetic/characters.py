"""The synthetic characters: palettes, regions, skeletons, poses and how each one is drawn.

Two designs, seen in three-quarter view and modelled facing +x (right) in head units:

- ``hero``: a boy with short spiky indigo hair, an orange jacket with cream collar and cuffs,
  blue trousers with a belt and gold buckle, red sneakers with cream soles;
- ``mika``: a girl with long auburn hair and a pink ribbon, a teal blouse with a cream collar and
  a pink bow, a plum pleated skirt, bare arms and legs, cream socks and brown shoes.

A design declares its regions once (their order gives the label ids, so ids are stable across
frames and across the model sheet); the draw function paints them back to front on a skeleton
posed per frame. Shading regions (shadows, highlights) exist only when hint lines are on and are
clipped to the region they shade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .geometry import (
    arc_band,
    capsule,
    ellipse,
    rectangle,
    rotation,
    scaling,
    shifted,
    swept_spikes,
    swing_down,
    swing_up,
    translation,
    zigzag_band,
)
from .render import Drawing, HintKind


@dataclass(frozen=True)
class RegionSpec:
    """A region of a character: one label id, one palette colour."""

    name: str
    color: str  # palette colour name
    shades: str | None = None  # for a shading region: the region it shades (and is clipped to)
    hint: HintKind | None = None  # shading regions: the kind of hint line around them
    clip: str | None = None  # paint only inside this region (eyes inside the eye white, ...)

    @property
    def clip_region(self) -> str | None:
        return self.clip or self.shades


@dataclass(frozen=True)
class Body:
    """Bone lengths and joint positions, in head units."""

    torso: float  # pelvis to the base of the neck
    neck: float
    shoulder_near: float  # x of the shoulder joints in the torso frame
    shoulder_far: float
    shoulder_drop: float  # shoulder joints below the base of the neck
    upper_arm: float
    forearm: float
    hip_near: float  # x of the hip joints in the pelvis frame
    hip_far: float
    hip_drop: float
    thigh: float
    shin: float
    crown: float  # top of the hair above the base of the neck
    sole: float  # bottom of the shoe below the ankle

    @property
    def above_pelvis(self) -> float:
        return self.torso + self.neck + self.crown

    @property
    def below_pelvis(self) -> float:
        return self.hip_drop + self.thigh + self.shin + self.sole


@dataclass(frozen=True)
class Pose:
    """Joint angles in degrees (positive = forward for limbs and the spine) and the expression."""

    bob: float = 0.0  # pelvis offset, head units, + = down
    pelvis_tilt: float = 0.0
    lean: float = 0.0
    head_tilt: float = 0.0
    near_shoulder: float = 0.0
    near_elbow: float = 0.0
    far_shoulder: float = 0.0
    far_elbow: float = 0.0
    wrist: float = 0.0
    near_thigh: float = 0.0
    near_knee: float = 0.0  # knee bend, + = shin back
    near_pitch: float = 0.0  # foot angle, + = toe up
    far_thigh: float = 0.0
    far_knee: float = 0.0
    far_pitch: float = 0.0
    mouth_open: float = 0.3  # 0 closed .. 1 wide open
    eyes_open: bool = True
    sway: float = 0.0  # skirt hem and hair ends, head units


@dataclass(frozen=True)
class Placement:
    """Where the character stands in the frame: pelvis position in pixels, pixels per head unit."""

    x: float
    y: float
    scale: float
    facing: int = 1  # +1 walks right, -1 is drawn mirrored and walks left
    roll: float = 0.0  # camera roll, degrees


@dataclass(frozen=True)
class Design:
    name: str
    palette: dict[str, str]  # colour name -> '#rrggbb'
    regions: tuple[RegionSpec, ...]
    body: Body
    draw: Callable[[Drawing, dict[str, np.ndarray], Pose, Body], None]

    def region(self, name: str) -> RegionSpec:
        for spec in self.regions:
            if spec.name == name:
                return spec
        raise KeyError(f"character {self.name!r} has no region {name!r}")


def skeleton(body: Body, pose: Pose, placement: Placement) -> dict[str, np.ndarray]:
    """World (pixel) matrices of every bone for a pose."""
    camera = (
        translation(placement.x, placement.y)
        @ rotation(placement.roll)
        @ scaling(placement.facing * placement.scale, placement.scale)
    )
    root = camera @ translation(0.0, pose.bob) @ rotation(pose.pelvis_tilt)
    torso = root @ swing_up(pose.lean)
    head = torso @ translation(0.0, -(body.torso + body.neck)) @ swing_up(pose.head_tilt)
    bones = {"root": root, "torso": torso, "head": head, "face": head @ translation(0.04, -0.47)}
    for side, x in (("near", body.shoulder_near), ("far", body.shoulder_far)):
        shoulder = (
            torso
            @ translation(x, -body.torso + body.shoulder_drop)
            @ swing_down(getattr(pose, f"{side}_shoulder") - pose.lean)
        )
        elbow = shoulder @ translation(0.0, body.upper_arm) @ swing_down(getattr(pose, f"{side}_elbow"))
        bones[f"{side}_shoulder"] = shoulder
        bones[f"{side}_elbow"] = elbow
        bones[f"{side}_wrist"] = elbow @ translation(0.0, body.forearm) @ swing_down(pose.wrist)
    for side, x in (("near", body.hip_near), ("far", body.hip_far)):
        thigh = getattr(pose, f"{side}_thigh")
        knee = getattr(pose, f"{side}_knee")
        hip = root @ translation(x, body.hip_drop) @ swing_down(thigh)
        knee_bone = hip @ translation(0.0, body.thigh) @ swing_down(-knee)
        # the foot cancels the leg's rotation and then pitches on its own
        ankle = (
            knee_bone
            @ translation(0.0, body.shin)
            @ rotation(thigh - knee - pose.pelvis_tilt)
            @ rotation(-getattr(pose, f"{side}_pitch"))
        )
        bones[f"{side}_hip"] = hip
        bones[f"{side}_knee"] = knee_bone
        bones[f"{side}_ankle"] = ankle
    return bones


CYCLE_FRAMES = 12  # drawings per walk cycle (two steps): one second on twos at 24 fps


def walk_pose(phase: float, *, mouth_open: float, eyes_open: bool) -> Pose:
    """A walk cycle pose; `phase` in radians, 0 = near foot forward touching down."""
    c, s = math.cos(phase), math.sin(phase)
    return Pose(
        bob=0.045 * math.cos(2 * phase),
        pelvis_tilt=2.0 * s,
        lean=5.0 + 1.5 * math.cos(2 * phase),
        head_tilt=-2.0 + 2.5 * math.sin(2 * phase),
        near_thigh=26.0 * c,
        near_knee=6.0 + 40.0 * max(0.0, -s),
        near_pitch=12.0 * c - 14.0 * max(0.0, -c) * max(0.0, s),
        far_thigh=-26.0 * c,
        far_knee=6.0 + 40.0 * max(0.0, s),
        far_pitch=-12.0 * c - 14.0 * max(0.0, c) * max(0.0, -s),
        # arms swing against the legs; the forward elbow bends so the near forearm crosses the body
        near_shoulder=-28.0 * c,
        near_elbow=12.0 + 58.0 * max(0.0, -c),
        far_shoulder=28.0 * c,
        far_elbow=12.0 + 45.0 * max(0.0, c),
        wrist=8.0,
        mouth_open=mouth_open,
        eyes_open=eyes_open,
        sway=-0.05 * s,
    )


def reference_pose() -> Pose:
    """The model-sheet pose: standing straight, arms a little away from the body, legs apart."""
    return Pose(
        near_shoulder=-9.0,
        near_elbow=8.0,
        far_shoulder=10.0,
        far_elbow=10.0,
        wrist=4.0,
        near_thigh=-5.0,
        near_knee=2.0,
        far_thigh=6.0,
        far_knee=2.0,
        mouth_open=0.25,
    )


# --------------------------------------------------------------------------------------------
# shared head parts (face frame: face centre at the origin, crown y = -0.55, chin y = +0.45)

FACE_OUTLINE = np.concatenate(
    [
        ellipse(0.0, -0.05, 0.42, 0.48, start=150.0, end=352.0, count=24),
        np.array(
            [[0.425, 0.05], [0.40, 0.19], [0.30, 0.34], [0.15, 0.45], [0.06, 0.455], [-0.12, 0.38], [-0.28, 0.28]]
        ),
    ]
)


@dataclass(frozen=True)
class EyeStyle:
    near_center: tuple[float, float]
    far_center: tuple[float, float]
    near_radius: tuple[float, float]
    far_radius: tuple[float, float]


def draw_face(drawing: Drawing, face: np.ndarray, pose: Pose, eyes: EyeStyle, bangs_edge: np.ndarray) -> None:
    """Ear, face, face shadow, both eyes, brows and mouth, back to front."""
    drawing.add("face", face, FACE_OUTLINE)
    # the fringe casts its own zigzag shadow onto the forehead
    fringe_shadow = np.concatenate([shifted(bangs_edge, 0.03, 0.11), np.array([[-0.6, -0.7], [0.6, -0.7]])])
    drawing.add("face_shadow", face, fringe_shadow)
    drawing.add("ear", face, ellipse(-0.31, 0.1, 0.07, 0.11, 10.0, count=24))
    for side, (cx, cy), (rx, ry) in (
        ("near", eyes.near_center, eyes.near_radius),
        ("far", eyes.far_center, eyes.far_radius),
    ):
        if pose.eyes_open:
            icx, icy, irx, iry = cx + 0.25 * rx, cy + 0.03, 0.74 * rx, 0.84 * ry
            drawing.add(f"{side}_eye_white", face, ellipse(cx, cy, rx, ry, count=32))
            drawing.add(f"{side}_iris", face, ellipse(icx, icy, irx, iry, count=32))
            pupil = ellipse(icx + 0.05 * irx, icy + 0.12 * iry, 0.4 * irx, 0.48 * iry, count=24)
            drawing.add(f"{side}_pupil", face, pupil)
            glint = ellipse(icx - 0.35 * irx, icy - 0.38 * iry, 0.36 * irx, 0.28 * iry, count=20)
            drawing.add(f"{side}_eye_highlight", face, glint)
            drawing.add(f"{side}_lash", face, arc_band(cx, cy + 0.01, rx + 0.012, ry, 0.06, 188.0, 342.0))
        else:
            # a closed eye: the eye regions vanish and the lash becomes a smiling curve
            drawing.add(f"{side}_lash", face, arc_band(cx, cy - 0.03, rx * 1.02, ry * 0.5, 0.05, 12.0, 168.0))
        drawing.add(f"{side}_brow", face, arc_band(cx + 0.01, cy + 0.08, rx * 1.15, ry * 2.0, 0.055, 222.0, 318.0))
    depth = 0.035 + 0.06 * pose.mouth_open
    drawing.add("mouth", face, ellipse(0.18, 0.295, 0.065, depth, -4.0, start=0.0, end=180.0, count=16))


def head_regions(with_ear: bool = True) -> list[RegionSpec]:
    regions = [
        RegionSpec("face", "skin"),
        RegionSpec("face_shadow", "skin_shadow", shades="face", hint="shadow"),
        RegionSpec("ear", "skin"),
    ]
    for side in ("near", "far"):
        regions += [
            RegionSpec(f"{side}_eye_white", "eye_white"),
            RegionSpec(f"{side}_iris", "iris", clip=f"{side}_eye_white"),
            RegionSpec(f"{side}_pupil", "pupil", clip=f"{side}_iris"),
            RegionSpec(f"{side}_eye_highlight", "eye_highlight"),
            RegionSpec(f"{side}_lash", "lash"),
            RegionSpec(f"{side}_brow", "hair"),
        ]
    regions.append(RegionSpec("mouth", "mouth"))
    return regions


def draw_hand(drawing: Drawing, region: str, wrist: np.ndarray, size: float) -> None:
    drawing.add(
        region,
        wrist,
        ellipse(0.0, 0.12 * size / 0.085, size, size * 1.4, count=24),
        ellipse(size * 0.75, 0.05, size * 0.42, size * 0.9, -25.0, count=16),
    )


# --------------------------------------------------------------------------------------------
# hero

HERO_BODY = Body(
    torso=1.3, neck=0.2, shoulder_near=-0.28, shoulder_far=0.24, shoulder_drop=0.16,
    upper_arm=0.72, forearm=0.62, hip_near=-0.16, hip_far=0.14, hip_drop=0.14,
    thigh=0.98, shin=0.92, crown=1.12, sole=0.17,
)  # fmt: skip

HERO_PALETTE = {
    "hair": "#3b3561",
    "hair_highlight": "#6a64a6",
    "skin": "#f7d7c4",
    "skin_shadow": "#e2aa95",
    "eye_white": "#fbfaf6",
    "iris": "#3d86c6",
    "pupil": "#1f2547",
    "eye_highlight": "#eaf6ff",
    "lash": "#2a2238",
    "mouth": "#b2485a",
    "jacket": "#ef8a3c",
    "jacket_shadow": "#c9642a",
    "trim": "#f4ead2",
    "pants": "#3f5d86",
    "pants_shadow": "#2d4466",
    "belt": "#5a3b2c",
    "buckle": "#e7c04a",
    "shoe": "#d04848",
    "sole": "#ede4d3",
}

HERO_EYES = EyeStyle(
    near_center=(-0.06, 0.1), far_center=(0.27, 0.09), near_radius=(0.115, 0.135), far_radius=(0.085, 0.13)
)

# right to left across the forehead: (x, y) tips and roots of the spiky fringe
HERO_BANGS = np.array(
    [[0.47, -0.11], [0.43, 0.0], [0.36, -0.14], [0.31, -0.02], [0.22, -0.17], [0.13, -0.04], [0.04, -0.18],
     [-0.05, -0.05], [-0.14, -0.18], [-0.2, -0.06], [-0.25, -0.14]]
)  # fmt: skip

HERO_REGIONS: tuple[RegionSpec, ...] = tuple(
    [
        RegionSpec("hair_back", "hair"),
        RegionSpec("far_sleeve", "jacket"),
        RegionSpec("far_hand", "skin"),
        RegionSpec("far_cuff", "trim"),
        RegionSpec("far_shoe", "shoe"),
        RegionSpec("far_sole", "sole"),
        RegionSpec("far_leg", "pants"),
        RegionSpec("neck", "skin"),
        RegionSpec("neck_shadow", "skin_shadow", shades="neck", hint="shadow"),
        RegionSpec("jacket", "jacket"),
        RegionSpec("jacket_shadow", "jacket_shadow", shades="jacket", hint="shadow"),
        RegionSpec("near_collar", "trim"),
        RegionSpec("far_collar", "trim"),
        RegionSpec("near_shoe", "shoe"),
        RegionSpec("near_sole", "sole"),
        RegionSpec("pants", "pants"),
        RegionSpec("pants_shadow", "pants_shadow", shades="pants", hint="shadow"),
        RegionSpec("belt", "belt"),
        RegionSpec("buckle", "buckle"),
        *head_regions(),
        RegionSpec("hair_front", "hair"),
        RegionSpec("hair_highlight", "hair_highlight", shades="hair_front", hint="highlight"),
        RegionSpec("near_sleeve", "jacket"),
        RegionSpec("near_sleeve_shadow", "jacket_shadow", shades="near_sleeve", hint="shadow"),
        RegionSpec("near_hand", "skin"),
        RegionSpec("near_cuff", "trim"),
    ]
)


def _shoe(drawing: Drawing, side: str, ankle: np.ndarray) -> None:
    drawing.add(
        f"{side}_shoe",
        ankle,
        np.array([[-0.14, -0.1], [0.06, -0.13], [0.2, -0.05], [0.35, 0.02], [0.4, 0.1], [-0.15, 0.12]]),
    )
    drawing.add(f"{side}_sole", ankle, np.array([[-0.16, 0.09], [0.41, 0.09], [0.4, 0.17], [-0.15, 0.17]]))


def _jacket_arm(drawing: Drawing, side: str, bones: dict[str, np.ndarray], body: Body, shadow: bool) -> None:
    shoulder, elbow, wrist = bones[f"{side}_shoulder"], bones[f"{side}_elbow"], bones[f"{side}_wrist"]
    upper, lower = capsule(body.upper_arm, 0.31, 0.26, start=-0.05), capsule(body.forearm, 0.26, 0.22)
    drawing.add(f"{side}_sleeve", shoulder, upper)
    drawing.add(f"{side}_sleeve", elbow, lower)
    if shadow:  # the underside of the arm, whichever way the elbow bends
        drawing.add(f"{side}_sleeve_shadow", shoulder, shifted(upper, -0.17, 0.0))
        drawing.add(f"{side}_sleeve_shadow", elbow, shifted(lower, -0.15, 0.0))
    draw_hand(drawing, f"{side}_hand", wrist, 0.085)
    drawing.add(f"{side}_cuff", wrist, rectangle(-0.125, -0.1, 0.125, 0.02))


def draw_hero(drawing: Drawing, bones: dict[str, np.ndarray], pose: Pose, body: Body) -> None:
    face, torso, root = bones["face"], bones["torso"], bones["root"]
    t = body.torso
    # hair swept back: spikes along the back and the top of the skull, the rest hidden by the face
    skull = ellipse(-0.06, -0.06, 0.49, 0.52, start=100.0, end=290.0, count=8)
    back = swept_spikes(skull, (-0.06, -0.06), (0.16, 0.2, 0.18, 0.2, 0.16, 0.14, 0.12), -35.0)
    back = np.concatenate([back, np.array([[0.1, -0.2], [-0.1, 0.2]])])
    drawing.add("hair_back", face, back)

    _jacket_arm(drawing, "far", bones, body, shadow=False)
    _shoe(drawing, "far", bones["far_ankle"])
    drawing.add("far_leg", bones["far_hip"], capsule(body.thigh, 0.36, 0.3, start=-0.05))
    drawing.add("far_leg", bones["far_knee"], capsule(body.shin, 0.3, 0.25))

    drawing.add("neck", torso, rectangle(-0.11, -t - 0.55, 0.13, -t + 0.3))
    drawing.add("neck_shadow", face, shifted(FACE_OUTLINE, 0.0, 0.13))
    jacket = np.array(
        [[-0.14, -t - 0.02], [-0.3, -t + 0.04], [-0.37, -t + 0.22], [-0.35, -0.75], [-0.3, -0.35], [-0.33, 0.0],
         [0.31, 0.0], [0.28, -0.35], [0.34, -0.8], [0.3, -t + 0.2], [0.24, -t + 0.03], [0.15, -t - 0.02],
         [0.03, -t + 0.24]]
    )  # fmt: skip
    drawing.add("jacket", torso, jacket)
    drawing.add(
        "jacket_shadow",
        torso,
        np.array(
            [[-0.5, -t - 0.1], [-0.17, -t - 0.1], [-0.22, -t + 0.4], [-0.15, -0.85], [-0.21, -0.45], [-0.14, -0.1],
             [-0.5, 0.1]]
        ),  # fmt: skip
    )
    near_flap = np.array([[-0.15, -t - 0.03], [0.03, -t + 0.24], [-0.05, -t + 0.32], [-0.27, -t + 0.07]])
    drawing.add("near_collar", torso, near_flap)
    far_flap = np.array([[0.16, -t - 0.03], [0.03, -t + 0.24], [0.1, -t + 0.3], [0.26, -t + 0.06]])
    drawing.add("far_collar", torso, far_flap)

    _shoe(drawing, "near", bones["near_ankle"])
    drawing.add("pants", root, np.array([[-0.34, -0.14], [0.32, -0.14], [0.34, 0.28], [0.02, 0.38], [-0.36, 0.28]]))
    drawing.add("pants", bones["near_hip"], capsule(body.thigh, 0.36, 0.3, start=-0.05))
    drawing.add("pants", bones["near_knee"], capsule(body.shin, 0.3, 0.25))
    drawing.add("pants_shadow", bones["near_hip"], shifted(capsule(body.thigh, 0.36, 0.3, start=-0.05), -0.2, 0.0))
    drawing.add("pants_shadow", bones["near_knee"], shifted(capsule(body.shin, 0.3, 0.25), -0.16, 0.0))
    drawing.add("belt", root, np.array([[-0.35, -0.18], [0.33, -0.18], [0.33, -0.06], [-0.35, -0.06]]))
    drawing.add("buckle", root, rectangle(0.05, -0.2, 0.16, -0.04))

    draw_face(drawing, face, pose, HERO_EYES, HERO_BANGS)
    crown = ellipse(0.0, -0.07, 0.47, 0.52, start=192.0, end=340.0, count=7)
    top = swept_spikes(crown, (0.0, -0.07), (0.08, 0.12, 0.14, 0.12, 0.1, 0.06), -30.0)
    # a sideburn in front of the ear, which stays visible below the hair line
    side_lock = np.array([[-0.25, -0.14], [-0.22, 0.04], [-0.24, 0.22], [-0.29, 0.06], [-0.33, -0.08], [-0.4, -0.02]])
    drawing.add("hair_front", face, np.concatenate([top, HERO_BANGS, side_lock]))
    drawing.add("hair_highlight", face, zigzag_band(-0.01, -0.08, 0.39, 0.42, 0.11, 208.0, 305.0, teeth=5))

    _jacket_arm(drawing, "near", bones, body, shadow=True)


# --------------------------------------------------------------------------------------------
# mika

MIKA_BODY = Body(
    torso=1.2, neck=0.2, shoulder_near=-0.24, shoulder_far=0.2, shoulder_drop=0.14,
    upper_arm=0.66, forearm=0.58, hip_near=-0.13, hip_far=0.11, hip_drop=0.1,
    thigh=0.95, shin=0.9, crown=1.1, sole=0.13,
)  # fmt: skip

MIKA_PALETTE = {
    "hair": "#c4553b",
    "hair_highlight": "#e8906e",
    "ribbon": "#e8456b",
    "skin": "#fadfcc",
    "skin_shadow": "#e9b6a0",
    "eye_white": "#fdfbf5",
    "iris": "#2f9e74",
    "pupil": "#17392c",
    "eye_highlight": "#effff7",
    "lash": "#3a2424",
    "mouth": "#c25462",
    "blouse": "#8fd0d6",
    "blouse_shadow": "#65a8b3",
    "collar": "#fbf3e4",
    "skirt": "#7b3f7a",
    "skirt_shadow": "#5a2b5a",
    "sock": "#ece6dc",
    "shoe": "#5a3a30",
    "sole": "#b59a84",
}

MIKA_EYES = EyeStyle(
    near_center=(-0.05, 0.12), far_center=(0.27, 0.11), near_radius=(0.12, 0.15), far_radius=(0.09, 0.145)
)

MIKA_BANGS = np.array(
    [[0.47, -0.08], [0.42, 0.02], [0.32, -0.12], [0.24, -0.01], [0.14, -0.16], [0.04, -0.04], [-0.08, -0.17],
     [-0.17, -0.05], [-0.25, -0.13]]
)  # fmt: skip

MIKA_REGIONS: tuple[RegionSpec, ...] = tuple(
    [
        RegionSpec("hair_back", "hair"),
        RegionSpec("far_arm", "skin"),
        RegionSpec("far_sleeve", "blouse"),
        RegionSpec("far_leg", "skin"),
        RegionSpec("far_sock", "sock"),
        RegionSpec("far_shoe", "shoe"),
        RegionSpec("far_sole", "sole"),
        RegionSpec("neck", "skin"),
        RegionSpec("neck_shadow", "skin_shadow", shades="neck", hint="shadow"),
        RegionSpec("blouse", "blouse"),
        RegionSpec("blouse_shadow", "blouse_shadow", shades="blouse", hint="shadow"),
        RegionSpec("near_collar", "collar"),
        RegionSpec("far_collar", "collar"),
        RegionSpec("chest_bow", "ribbon"),
        RegionSpec("near_leg", "skin"),
        RegionSpec("near_sock", "sock"),
        RegionSpec("near_shoe", "shoe"),
        RegionSpec("near_sole", "sole"),
        RegionSpec("skirt", "skirt"),
        RegionSpec("skirt_shadow", "skirt_shadow", shades="skirt", hint="shadow"),
        *head_regions(),
        RegionSpec("hair_front", "hair"),
        RegionSpec("hair_highlight", "hair_highlight", shades="hair_front", hint="highlight"),
        RegionSpec("ribbon", "ribbon"),
        RegionSpec("near_arm", "skin"),
        RegionSpec("near_sleeve", "blouse"),
        RegionSpec("near_sleeve_shadow", "blouse_shadow", shades="near_sleeve", hint="shadow"),
    ]
)


def _bare_arm(drawing: Drawing, side: str, bones: dict[str, np.ndarray], body: Body, shadow: bool) -> None:
    shoulder, elbow, wrist = bones[f"{side}_shoulder"], bones[f"{side}_elbow"], bones[f"{side}_wrist"]
    drawing.add(f"{side}_arm", shoulder, capsule(body.upper_arm, 0.17, 0.15, start=0.15))
    drawing.add(f"{side}_arm", elbow, capsule(body.forearm, 0.15, 0.12))
    draw_hand(drawing, f"{side}_arm", wrist, 0.075)
    sleeve = capsule(0.34, 0.28, 0.27, start=-0.05)
    drawing.add(f"{side}_sleeve", shoulder, sleeve)
    if shadow:
        drawing.add(f"{side}_sleeve_shadow", shoulder, shifted(sleeve, -0.17, 0.0))


def _bare_leg(drawing: Drawing, side: str, bones: dict[str, np.ndarray], body: Body) -> None:
    drawing.add(f"{side}_leg", bones[f"{side}_hip"], capsule(body.thigh, 0.25, 0.2, start=-0.05))
    drawing.add(f"{side}_leg", bones[f"{side}_knee"], capsule(body.shin, 0.2, 0.14))
    drawing.add(f"{side}_sock", bones[f"{side}_knee"], capsule(body.shin, 0.21, 0.16, start=0.5))
    ankle = bones[f"{side}_ankle"]
    shoe = np.array([[-0.12, -0.05], [0.1, -0.07], [0.3, 0.01], [0.34, 0.08], [-0.13, 0.09]])
    drawing.add(f"{side}_shoe", ankle, shoe)
    drawing.add(f"{side}_sole", ankle, np.array([[-0.14, 0.07], [0.35, 0.07], [0.34, 0.13], [-0.13, 0.13]]))


def draw_mika(drawing: Drawing, bones: dict[str, np.ndarray], pose: Pose, body: Body) -> None:
    face, torso, root = bones["face"], bones["torso"], bones["root"]
    t = body.torso
    sway = pose.sway
    long_hair = np.concatenate(
        [
            ellipse(-0.03, -0.06, 0.52, 0.56, start=170.0, end=365.0, count=20),
            np.array(
                [[0.5, 0.3], [0.36, 0.6], [0.1, 0.62], [0.02 + sway, 1.3], [-0.1 + sway, 1.75], [-0.22 + sway, 1.62],
                 [-0.33 + sway, 1.8], [-0.45 + sway, 1.63], [-0.58 + sway, 1.72], [-0.62 + sway, 1.2], [-0.6, 0.6]]
            ),
        ]
    )  # fmt: skip
    drawing.add("hair_back", face, long_hair)

    _bare_arm(drawing, "far", bones, body, shadow=False)
    _bare_leg(drawing, "far", bones, body)

    drawing.add("neck", torso, rectangle(-0.1, -t - 0.55, 0.12, -t + 0.3))
    drawing.add("neck_shadow", face, shifted(FACE_OUTLINE, 0.0, 0.13))
    blouse = np.array(
        [[-0.12, -t - 0.02], [-0.26, -t + 0.04], [-0.31, -t + 0.2], [-0.29, -0.75], [-0.24, -0.35], [-0.27, -0.05],
         [0.25, -0.05], [0.22, -0.35], [0.29, -0.8], [0.25, -t + 0.18], [0.2, -t + 0.03], [0.13, -t - 0.02],
         [0.01, -t + 0.12]]
    )  # fmt: skip
    drawing.add("blouse", torso, blouse)
    drawing.add(
        "blouse_shadow",
        torso,
        np.array(
            [[-0.5, -t - 0.1], [-0.15, -t - 0.1], [-0.19, -t + 0.45], [-0.13, -0.8], [-0.18, -0.4], [-0.12, 0.0],
             [-0.5, 0.1]]
        ),  # fmt: skip
    )
    drawing.add("near_collar", torso, ellipse(-0.09, -t + 0.07, 0.14, 0.08, 28.0, count=24))
    drawing.add("far_collar", torso, ellipse(0.12, -t + 0.07, 0.12, 0.07, -28.0, count=24))
    bow_center = (0.02, -t + 0.2)
    bx, by = bow_center
    drawing.add(
        "chest_bow",
        torso,
        np.array([[bx, by], [bx - 0.13, by - 0.07], [bx - 0.12, by + 0.08]]),
        np.array([[bx, by], [bx + 0.12, by - 0.07], [bx + 0.11, by + 0.08]]),
        ellipse(bx, by, 0.04, 0.04, count=12),
    )

    _bare_leg(drawing, "near", bones, body)
    skirt = np.array(
        [[-0.28, -0.2], [0.26, -0.2], [0.31, 0.1], [0.45 + sway, 0.6], [0.33 + sway, 0.55], [0.2 + sway, 0.64],
         [0.07 + sway, 0.56], [-0.06 + sway, 0.65], [-0.2 + sway, 0.57], [-0.33 + sway, 0.66], [-0.47 + sway, 0.59],
         [-0.33, 0.1]]
    )  # fmt: skip
    drawing.add("skirt", root, skirt)
    drawing.add(
        "skirt_shadow",
        root,
        np.array([[-0.6, -0.3], [-0.17, -0.3], [-0.16, 0.1], [-0.2 + sway, 0.7], [-0.6 + sway, 0.75]]),
    )

    draw_face(drawing, face, pose, MIKA_EYES, MIKA_BANGS)
    top = ellipse(0.0, -0.07, 0.48, 0.53, start=168.0, end=345.0, count=18)
    side_lock = np.array([[-0.26, -0.12], [-0.25, 0.3], [-0.31, 0.6], [-0.4, 0.36], [-0.47, 0.06]])
    drawing.add("hair_front", face, np.concatenate([top, MIKA_BANGS, side_lock]))
    drawing.add("hair_highlight", face, zigzag_band(-0.01, -0.08, 0.4, 0.43, 0.1, 212.0, 305.0, teeth=4))
    knot = (-0.36, -0.36)
    kx, ky = knot
    drawing.add(
        "ribbon",
        face,
        np.array([[kx, ky], [kx - 0.2, ky - 0.13], [kx - 0.22, ky + 0.08]]),
        np.array([[kx, ky], [kx + 0.1, ky - 0.2], [kx + 0.19, ky - 0.03]]),
        ellipse(kx, ky, 0.055, 0.055, count=12),
    )

    _bare_arm(drawing, "near", bones, body, shadow=True)


DESIGNS: dict[str, Design] = {
    "hero": Design("hero", HERO_PALETTE, HERO_REGIONS, HERO_BODY, draw_hero),
    "mika": Design("mika", MIKA_PALETTE, MIKA_REGIONS, MIKA_BODY, draw_mika),
}


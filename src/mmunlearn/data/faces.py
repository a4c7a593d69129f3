"""Procedurally drawn face-like images whose identity the image alone determines.

An identity is a tuple of discrete features (background, skin, hair colour and style, eyes, shirt,
glasses, face shape) picked so that any two people differ in at least two features — enough for a
tiny vision tower to tell them apart. A pose (rotation, scale, shift, lighting, noise) re-draws the
same identity for the Test set; the difficulty ladder bounds how far the pose may move.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance

BACKGROUNDS = ((235, 235, 235), (40, 40, 60), (120, 180, 230), (240, 200, 120), (150, 220, 150),
               (230, 150, 170), (90, 60, 130), (30, 110, 100), (200, 90, 40), (250, 250, 170))
SKINS = ((255, 224, 196), (234, 192, 134), (198, 134, 66), (141, 85, 36), (92, 56, 30), (255, 205, 180))
HAIR_COLOURS = ((20, 20, 20), (110, 60, 20), (230, 200, 90), (200, 80, 30), (180, 180, 180),
                (60, 90, 200), (160, 40, 140))
HAIR_STYLES = ("short", "long", "bun", "bald")
EYE_COLOURS = ((30, 30, 30), (40, 110, 200), (40, 150, 60), (120, 70, 20))
SHIRTS = ((200, 30, 30), (30, 60, 200), (30, 160, 60), (240, 200, 20), (250, 250, 250),
          (20, 20, 20), (130, 30, 160), (240, 120, 20))
FACE_SHAPES = ((0.30, 0.38), (0.26, 0.40), (0.34, 0.34))  # half-width, half-height of the face ellipse
FEATURE_SIZES = (len(BACKGROUNDS), len(SKINS), len(HAIR_COLOURS), len(HAIR_STYLES), len(EYE_COLOURS),
                 len(SHIRTS), 2, len(FACE_SHAPES))
MIN_FEATURE_DISTANCE = 2


@dataclass(frozen=True)
class FaceIdentity:
    background: int
    skin: int
    hair_colour: int
    hair_style: int
    eyes: int
    shirt: int
    glasses: int
    face_shape: int

    def features(self) -> tuple[int, ...]:
        return (self.background, self.skin, self.hair_colour, self.hair_style, self.eyes, self.shirt,
                self.glasses, self.face_shape)


@dataclass(frozen=True)
class Pose:
    rotation: float = 0.0  # degrees
    scale: float = 1.0
    shift_x: float = 0.0  # fraction of the image size
    shift_y: float = 0.0
    brightness: float = 1.0
    noise: float = 0.0  # salt-and-pepper fraction of pixels


# Bounds of each rung of the Test-set ladder: (max rotation, max |scale-1|, max shift, max |brightness-1|, noise).
POSE_LADDER = {
    "easy": (0.0, 0.0, 0.0, 0.06, 0.03),
    "medium": (8.0, 0.08, 0.05, 0.12, 0.0),
    "hard": (15.0, 0.15, 0.08, 0.25, 0.02),
}


def distinct_identities(count: int, rng: random.Random) -> list[FaceIdentity]:
    """Draw ``count`` identities, any two differing in at least MIN_FEATURE_DISTANCE features."""
    chosen: list[tuple[int, ...]] = []
    attempts = 0
    while len(chosen) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(f"cannot draw {count} distinct face identities from the feature palette")
        candidate = tuple(rng.randrange(size) for size in FEATURE_SIZES)
        if all(sum(a != b for a, b in zip(candidate, other)) >= MIN_FEATURE_DISTANCE for other in chosen):
            chosen.append(candidate)
    return [FaceIdentity(*features) for features in chosen]


def random_pose(difficulty: str, rng: random.Random) -> Pose:
    rotation, scale, shift, light, noise = POSE_LADDER[difficulty]

    def spread(limit: float) -> float:
        # at least half the rung's bound, so a harder rung really moves further
        return rng.choice((-1, 1)) * rng.uniform(limit / 2, limit) if limit else 0.0

    return Pose(rotation=spread(rotation), scale=1.0 + spread(scale), shift_x=spread(shift),
                shift_y=spread(shift), brightness=1.0 + spread(light), noise=noise)


def _draw_identity(identity: FaceIdentity, size: int) -> Image.Image:
    canvas = Image.new("RGB", (size, size), BACKGROUNDS[identity.background])
    draw = ImageDraw.Draw(canvas)
    s = size
    hair = HAIR_COLOURS[identity.hair_colour]
    style = HAIR_STYLES[identity.hair_style]
    half_w, half_h = FACE_SHAPES[identity.face_shape]
    cx, cy = 0.5 * s, 0.45 * s
    # shirt / shoulders
    draw.ellipse((0.10 * s, 0.78 * s, 0.90 * s, 1.30 * s), fill=SHIRTS[identity.shirt])
    if style == "long":
        draw.rectangle((cx - (half_w + 0.06) * s, cy - 0.1 * s, cx + (half_w + 0.06) * s, cy + 0.42 * s), fill=hair)
    draw.ellipse((cx - half_w * s, cy - half_h * s, cx + half_w * s, cy + half_h * s), fill=SKINS[identity.skin])
    if style != "bald":
        draw.chord((cx - (half_w + 0.03) * s, cy - (half_h + 0.05) * s, cx + (half_w + 0.03) * s,
                    cy + 0.15 * s), 180, 360, fill=hair)
    if style == "bun":
        draw.ellipse((cx - 0.1 * s, cy - (half_h + 0.17) * s, cx + 0.1 * s, cy - (half_h - 0.02) * s), fill=hair)
    eye_y, eye_dx, eye_r = cy + 0.02 * s, 0.12 * s, 0.045 * s
    for ex in (cx - eye_dx, cx + eye_dx):
        draw.ellipse((ex - eye_r * 1.4, eye_y - eye_r, ex + eye_r * 1.4, eye_y + eye_r), fill=(255, 255, 255))
        draw.ellipse((ex - eye_r * 0.8, eye_y - eye_r * 0.8, ex + eye_r * 0.8, eye_y + eye_r * 0.8),
                     fill=EYE_COLOURS[identity.eyes])
        if identity.glasses:
            draw.ellipse((ex - eye_r * 2.2, eye_y - eye_r * 1.8, ex + eye_r * 2.2, eye_y + eye_r * 1.8),
                         outline=(10, 10, 10), width=max(1, s // 40))
    draw.line((cx, cy + 0.05 * s, cx - 0.02 * s, cy + 0.14 * s), fill=(120, 60, 40), width=max(1, s // 64))
    draw.arc((cx - 0.1 * s, cy + 0.12 * s, cx + 0.1 * s, cy + 0.26 * s), 20, 160, fill=(150, 30, 40),
             width=max(1, s // 40))
    return canvas


def render_face(identity: FaceIdentity, size: int, pose: Pose = Pose(), noise_seed: int = 0) -> Image.Image:
    """Draw the identity at ``size`` px (drawn at 4x, then downsampled for smooth edges)."""
    big = size * 4
    image = _draw_identity(identity, big)
    if pose.rotation or pose.scale != 1.0 or pose.shift_x or pose.shift_y:
        image = image.rotate(pose.rotation, resample=Image.Resampling.BILINEAR,
                             translate=(pose.shift_x * big, pose.shift_y * big), fillcolor=BACKGROUNDS[identity.background])
        if pose.scale != 1.0:
            scaled = image.resize((round(big * pose.scale),) * 2, Image.Resampling.BILINEAR)
            image = Image.new("RGB", (big, big), BACKGROUNDS[identity.background])
            offset = (big - scaled.width) // 2
            image.paste(scaled, (offset, offset))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if pose.brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(pose.brightness)
    if pose.noise:
        rng = random.Random(noise_seed)
        pixels = image.load()
        for _ in range(int(pose.noise * size * size)):
            pixels[rng.randrange(size), rng.randrange(size)] = rng.choice(((0, 0, 0), (255, 255, 255)))
    return image


def png_bytes(image: Image.Image) -> bytes:
    """Encode as PNG with no metadata, so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()

"""Drawing one phantom radiograph: anatomy, nuisance variation and the sign of each finding kind.

The findings come from `cxr_mtclip.data.phantoms.findings` (report text or MeSH terms); each kind is drawn as a
distinct, fairly large sign:

=================  ============================================================================
finding            what is drawn
=================  ============================================================================
cardiomegaly       heart silhouette 1.35-1.75x wider (cardiothoracic ratio > 0.5)
effusion           fluid filling the lung base with a lateral meniscus, costophrenic angle gone
opacity            irregular airspace density at the named side / zone
nodule, mass       round sharp density (mass: larger, lobulated)
granuloma          small calcified (very bright) dot
pneumothorax       lucent rim without lung markings around a collapsed lung with a pleural line
atelectasis        plate-like linear density at the named side / zone
edema              bilateral perihilar haze
hyperinflation     tall dark lungs, flat diaphragm, narrow heart
hypoinflation      short lungs, high diaphragm, crowded bases
pacemaker          bright generator in the upper chest with leads to the heart
line               catheter / tube course (central line, PICC, endotracheal or nasogastric tube)
sternotomy         wire loops along the midline
clips              clusters of small metallic clips
degenerative       spine osteophytes (bright spurs)
scoliosis          curved spine and mediastinum
fracture           rib callus at the lateral chest wall
hernia             retrocardiac air-fluid bubble
aorta              enlarged, calcified aortic knob
hilar              enlarged lobulated hila
=================  ============================================================================

Nuisance variation (patient size and position, rotation, exposure, gamma, noise, rib phase, breast
shadows, side markers) keeps the task from being trivial. Left/right are the patient's: the patient's
left is on the image's right, as on a PA radiograph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .findings import FINDING_KINDS, ZONES, PhantomFinding

__all__ = ["render_phantom"]


def _ellipse_depth(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance inside an ellipse (positive inside), in image-width units."""
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return (1.0 - r) * min(a, b)


def _soft(depth: np.ndarray, width: float) -> np.ndarray:
    return np.clip(0.5 + depth / width, 0.0, 1.0)


def _blend(image: np.ndarray, alpha: np.ndarray, value: float | np.ndarray) -> None:
    image *= 1.0 - alpha
    image += alpha * value


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))


class _Renderer:
    """Draws one phantom radiograph on a fixed pixel grid (float32, then 8-bit grey)."""

    def __init__(self, size: int) -> None:
        if size < 64:
            raise ValueError(f"image_size must be >= 64 so findings stay visible, got {size}")
        self.size = size
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y0, self.x0 = np.meshgrid(axis, axis, indexing="ij")

    def render(self, findings: Sequence[PhantomFinding], rng: np.random.Generator) -> Image.Image:
        size = self.size
        kinds = {f.kind for f in findings}
        scale = rng.uniform(0.88, 1.05)
        cx = 0.5 + rng.normal(0, 0.012)
        tilt = math.radians(rng.uniform(-3.0, 3.0))
        dx_shift, dy_shift = rng.normal(0, 0.01), rng.normal(0, 0.015)
        cos_t, sin_t = math.cos(tilt), math.sin(tilt)
        xc, yc = self.x0 - 0.5, self.y0 - 0.5
        x = 0.5 + cos_t * xc - sin_t * yc - dx_shift
        y = 0.5 + sin_t * xc + cos_t * yc - dy_shift

        lung_height = rng.uniform(0.95, 1.05)
        dome = 0.05
        heart_factor = 1.0
        lung_darkness = 0.30
        if "hyperinflation" in kinds:
            lung_height *= 1.16
            dome = 0.008
            heart_factor *= 0.82
            lung_darkness = 0.36
        if "hypoinflation" in kinds:
            lung_height *= 0.78
            dome = 0.07
        for f in findings:
            if f.kind == "cardiomegaly":
                heart_factor = max(heart_factor, 1.25 + 0.3 * min(f.severity, 1.6))
        scoliosis = next((f for f in findings if f.kind == "scoliosis"), None)
        spine_amp = 0.0 if scoliosis is None else rng.choice([-1, 1]) * (0.035 + 0.015 * scoliosis.severity)
        spine_x = cx + spine_amp * np.sin(np.pi * np.clip((y - 0.12) / 0.75, 0, 1))

        image = 0.05 + 0.02 * _smooth_noise(rng, size, 6)
        body = _soft(_ellipse_depth(x, y, cx, 0.6, 0.45 * scale, 0.62), 0.03)
        _blend(image, body, 0.40 + 0.02 * _smooth_noise(rng, size, 8))
        # neck and shoulders: the body narrows above the apices
        shoulders = _soft(0.2 - y, 0.04) * _soft(np.abs(x - cx) - 0.12, 0.04)
        image -= 0.2 * shoulders * body

        # lungs: right lung on the image's left
        lungs = np.zeros_like(x)
        lung_info = {}
        for side, sign, width in (("right", -1.0, 0.135), ("left", 1.0, 0.125)):
            lx = cx + sign * 0.19 * scale
            a = width * scale
            b = 0.27 * lung_height
            ly = 0.2 + b
            base = ly + 0.92 * b - (0.025 if side == "right" else 0.0)
            u = (x - lx) / a
            superellipse = np.abs(u) ** 2.4 + np.abs((y - ly) / b) ** 2.2
            dome_y = base - dome * np.clip(1.0 - u**2, 0, 1)
            depth = np.minimum((1.0 - superellipse) * 0.6 * a, dome_y - y)
            mask = _soft(depth, 0.012)
            lung_info[side] = (lx, ly, a, b, base, sign, mask)
            lungs = np.maximum(lungs, mask)
        markings = 0.045 * _smooth_noise(rng, size, 20) + 0.03 * _smooth_noise(rng, size, 40)
        for side, (lx, ly, a, b, base, sign, mask) in lung_info.items():
            hilum = np.exp(-(((x - (cx + sign * 0.09 * scale)) ** 2 + (y - (ly + 0.1 * b)) ** 2) / 0.006))
            markings = markings + 0.12 * hilum * mask
        rib_phase = rng.uniform(0, 1)
        ribs = 0.5 + 0.5 * np.cos(2 * np.pi * ((y - 0.9 * (x - cx) ** 2) / 0.075 + rib_phase))
        ribs = ribs**6
        lung_value = image - lung_darkness + markings + 0.07 * ribs
        _blend(image, lungs, lung_value)

        if "pneumothorax" in kinds:
            for f in findings:
                if f.kind != "pneumothorax":
                    continue
                for side in self._sides(f, rng):
                    lx, ly, a, b, base, sign, mask = lung_info[side]
                    shrink = 0.78 - 0.08 * (f.severity - 1.0)
                    inner_x = lx - sign * a * (1 - shrink) * 0.6
                    inner_y = ly + b * (1 - shrink) * 0.5
                    inner = _ellipse_depth(x, y, inner_x, inner_y, a * shrink, b * shrink)
                    rim = mask * _soft(-inner, 0.01)
                    _blend(image, rim, 0.07)
                    _blend(image, mask * np.clip(1.0 - np.abs(inner) / 0.006, 0, 1), 0.38)

        # spine and mediastinum
        spine = _soft(0.032 - np.abs(x - spine_x), 0.01) * body
        vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (y / 0.048))
        image += spine * (0.1 + 0.05 * vertebrae) * (1 - lungs)
        # heart
        heart_w = 0.125 * scale * heart_factor
        heart_cx = cx + 0.04 * scale + 0.35 * (heart_w - 0.125 * scale)
        heart_cy = 0.2 + 1.6 * 0.27 * lung_height - 0.02
        heart = _soft(_ellipse_depth(x, y, heart_cx, heart_cy, heart_w, 0.105), 0.015)
        _blend(image, heart, 0.52 + 0.02 * rng.standard_normal())
        # aortic knob
        knob_r = 0.03
        if "aorta" in kinds:
            knob_r = 0.05
        knob = _soft(_ellipse_depth(x, y, cx + 0.05 * scale + (knob_r - 0.03), 0.33, knob_r, knob_r), 0.012)
        _blend(image, knob, 0.5)
        # gastric bubble under the left hemidiaphragm
        bubble_y = lung_info["left"][4] + 0.05
        bubble = _soft(_ellipse_depth(x, y, cx + 0.17 * scale, bubble_y, 0.04, 0.025), 0.01) * (1 - lungs)
        _blend(image, bubble, 0.18)
        # clavicles
        for sign in (-1.0, 1.0):
            image += 0.16 * self._segment(x, y, cx + sign * 0.04, 0.21, cx + sign * 0.34 * scale, 0.13, 0.012)
        if rng.random() < 0.4:  # breast shadows (symmetric nuisance)
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                shadow = _soft(_ellipse_depth(x, y, lx + sign * 0.03, base - 0.02, a * 1.1, 0.09), 0.03)
                image += 0.06 * shadow * mask

        overlay = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(overlay)
        for f in findings:
            self._draw_finding(f, image, draw, rng, x, y, cx, scale, lung_info, lungs, spine_x, heart_cx, heart_cy,
                               heart_w)
        if rng.random() < 0.5:  # side marker in a top corner
            px = int(rng.uniform(0.04, 0.12) * size) if rng.random() < 0.5 else int(rng.uniform(0.82, 0.9) * size)
            py = int(rng.uniform(0.03, 0.1) * size)
            draw.rectangle([px, py, px + size // 28, py + size // 22], fill=200)
        image += np.asarray(overlay, dtype=np.float32) / 255.0

        # exposure, gamma and noise
        image = np.clip(image, 0.0, 1.2) / 1.2
        gain = rng.uniform(0.85, 1.15)
        gamma = rng.uniform(0.8, 1.25)
        image = np.clip(image * gain + rng.normal(0, 0.02), 0, 1) ** gamma
        image = image + rng.normal(0, rng.uniform(0.008, 0.025), image.shape).astype(np.float32)
        return Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")

    def _sides(self, finding: PhantomFinding, rng: np.random.Generator) -> list[str]:
        side = finding.side or ("right" if rng.random() < 0.5 else "left")
        return ["right", "left"] if side == "bilateral" else [side]

    def _zone_y(self, zone: str | None, ly: float, b: float, rng: np.random.Generator) -> float:
        zone = zone or ZONES[int(rng.integers(0, 3))]
        return {"upper": ly - 0.5 * b, "mid": ly + 0.05 * b, "lower": ly + 0.5 * b}[zone]

    @staticmethod
    def _segment(x: np.ndarray, y: np.ndarray, x1: float, y1: float, x2: float, y2: float, width: float) -> np.ndarray:
        vx, vy = x2 - x1, y2 - y1
        t = np.clip(((x - x1) * vx + (y - y1) * vy) / (vx * vx + vy * vy), 0, 1)
        distance = np.sqrt((x - x1 - t * vx) ** 2 + (y - y1 - t * vy) ** 2)
        return _soft(width / 2 - distance, 0.006)

    def _px(self, value: float) -> float:
        return value * self.size

    def _draw_finding(self, f: PhantomFinding, image: np.ndarray, draw: ImageDraw.ImageDraw,
                      rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cx: float, scale: float,
                      lung_info: dict, lungs: np.ndarray, spine_x: np.ndarray, heart_cx: float, heart_cy: float,
                      heart_w: float) -> None:
        s, kind = self.size, f.kind
        if kind == "effusion":
            for side in self._sides(f, rng):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                level = base - (0.3 + 0.22 * min(f.severity, 1.6)) * b
                lateral = np.clip(sign * (x - lx) / a * 0.5 + 0.5, 0, 1)
                fluid = _soft(y - (level - 0.12 * lateral**2), 0.025)
                _blend(image, fluid * mask, 0.46)
        elif kind in {"opacity", "nodule", "mass", "granuloma", "atelectasis", "fracture"}:
            for side in self._sides(f, rng):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                oy = self._zone_y(f.zone, ly, b, rng)
                ox = lx + sign * rng.uniform(-0.25, 0.35) * a
                if kind == "opacity":
                    r = (0.055 + 0.025 * min(f.severity, 1.6)) * scale
                    wobble = 0.35 * _smooth_noise(rng, s, 10)
                    depth = (1.0 - np.sqrt(((x - ox) / r) ** 2 + ((y - oy) / (0.85 * r)) ** 2)) + wobble * 0.5
                    _blend(image, np.clip(depth * 2.5, 0, 0.95) * mask, 0.5)
                elif kind in {"nodule", "mass"}:
                    r = (0.03 if kind == "nodule" else 0.06) * (0.85 + 0.15 * f.severity)
                    angle = np.arctan2(y - oy, x - ox)
                    lobes = 1.0 + (0.15 * np.cos(3 * angle + rng.uniform(0, 6)) if kind == "mass" else 0.0)
                    depth = (r * lobes - np.sqrt((x - ox) ** 2 + (y - oy) ** 2))
                    _blend(image, _soft(depth, 0.008) * 0.95, 0.56)
                elif kind == "granuloma":
                    r = 0.016
                    depth = r - np.sqrt((x - ox) ** 2 + (y - oy) ** 2)
                    _blend(image, _soft(depth, 0.006), 0.9)
                elif kind == "atelectasis":
                    half = (0.07 + 0.03 * f.severity) * scale
                    slope = rng.uniform(-0.15, 0.15)
                    band = self._segment(x, y, ox - half, oy - slope * half, ox + half, oy + slope * half, 0.02)
                    _blend(image, band * mask * 0.9, 0.5)
                else:  # fracture: callus on a lateral rib
                    fx = lx + sign * 0.92 * a
                    callus = _soft(0.022 - np.sqrt(((x - fx) / 1.3) ** 2 + (y - oy) ** 2), 0.006)
                    _blend(image, callus, 0.78)
        elif kind == "edema":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                hx, hy = cx + sign * 0.11 * scale, ly + 0.1 * b
                haze = np.exp(-(((x - hx) / 0.13) ** 2 + ((y - hy) / 0.2) ** 2)) * (0.65 + 0.2 * f.severity)
                _blend(image, np.clip(haze, 0, 0.85) * mask, 0.45)
        elif kind == "hilar":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                hx, hy = cx + sign * 0.1 * scale, ly + 0.08 * b
                for k in range(3):
                    bx, by = hx + sign * rng.uniform(0, 0.03), hy + rng.uniform(-0.04, 0.04)
                    _blend(image, _soft(0.03 - np.sqrt((x - bx) ** 2 + (y - by) ** 2), 0.01), 0.55)
        elif kind == "hypoinflation":
            for side in ("right", "left"):
                lx, ly, a, b, base, sign, mask = lung_info[side]
                image += 0.08 * mask * _soft(y - (base - 0.35 * b), 0.05)
        elif kind == "hernia":
            hx, hy, r = heart_cx - 0.02, heart_cy + 0.03, 0.055
            distance = np.sqrt((x - hx) ** 2 + (y - hy) ** 2)
            air = _soft(r - distance, 0.006) * _soft(hy + 0.01 - y, 0.004)
            _blend(image, air, 0.15)
            _blend(image, np.clip(1.0 - np.abs(distance - r) / 0.006, 0, 1), 0.7)
        elif kind == "aorta":
            kx, ky, r = cx + 0.07 * scale, 0.33, 0.05
            arc = np.clip(1.0 - np.abs(np.sqrt((x - kx) ** 2 + (y - ky) ** 2) - r) / 0.007, 0, 1) * (x > kx)
            _blend(image, arc, 0.85)
        elif kind == "degenerative":
            rows = (np.arange(0.3, 0.8, 0.048) * s).astype(int)
            for row in rows:
                sx = float(spine_x[min(row, s - 1), s // 2]) * s
                for sign in (-1, 1):
                    if rng.random() < 0.75:
                        tip = sx + sign * (0.032 * s + rng.uniform(0.015, 0.03) * s)
                        draw.polygon([(sx + sign * 0.028 * s, row - 0.012 * s), (tip, row),
                                      (sx + sign * 0.028 * s, row + 0.012 * s)], fill=150)
        elif kind == "pacemaker":
            side = f.side if f.side in {"right", "left"} else "left"
            sign = 1 if side == "left" else -1
            gx, gy = (cx + sign * rng.uniform(0.22, 0.28) * scale) * s, rng.uniform(0.17, 0.23) * s
            w, h = 0.05 * s, 0.035 * s
            draw.rounded_rectangle([gx - w, gy - h, gx + w, gy + h], radius=int(0.015 * s), fill=215)
            draw.rectangle([gx - w * 0.5, gy - h - 0.012 * s, gx + w * 0.4, gy - h], fill=180)
            for k in range(int(rng.integers(1, 3))):
                tx, ty = (heart_cx + rng.uniform(-0.04, 0.05)) * s, (heart_cy + rng.uniform(0.0, 0.06)) * s
                self._curve(draw, [(gx, gy - h), ((cx + 0.02 * sign) * s, 0.2 * s), ((cx - 0.01) * s, 0.38 * s),
                                   (tx, ty)], 190, 2)
        elif kind == "line":
            detail = f.detail or "central"
            if detail == "et_tube":
                tx = float(spine_x[int(0.2 * s), s // 2]) * s
                draw.line([(tx, 0), (tx, rng.uniform(0.26, 0.3) * s)], fill=185, width=max(2, s // 80))
            elif detail == "ng_tube":
                tx = float(spine_x[int(0.2 * s), s // 2]) * s
                self._curve(draw, [(tx, 0), (tx + 0.01 * s, 0.45 * s), (tx + 0.04 * s, 0.75 * s),
                                   ((cx + 0.17 * scale) * s, 0.86 * s)], 185, 2)
            else:
                side = f.side if f.side in {"right", "left"} else ("right" if rng.random() < 0.6 else "left")
                sign = 1 if side == "left" else -1
                start = ((cx + sign * 0.4 * scale) * s, rng.uniform(0.1, 0.16) * s)
                self._curve(draw, [start, ((cx + sign * 0.15 * scale) * s, 0.2 * s),
                                   ((cx - 0.035) * s, 0.3 * s), ((cx - 0.03) * s, rng.uniform(0.42, 0.48) * s)],
                            185, 2)
        elif kind == "sternotomy":
            sx = cx * s
            for k in range(int(rng.integers(5, 8))):
                wy = (0.3 + 0.045 * k) * s
                draw.ellipse([sx - 0.018 * s, wy - 0.01 * s, sx + 0.018 * s, wy + 0.01 * s], outline=220,
                             width=max(2, s // 110))
        elif kind == "clips":
            side = f.side if f.side in {"right", "left"} else ("right" if rng.random() < 0.5 else "left")
            sign = 1 if side == "left" else -1
            lx, ly, a, b, base, _, _ = lung_info[side]
            bx, by = (lx + sign * 0.3 * a) * s, (base + 0.07) * s if rng.random() < 0.5 else (ly - 0.2 * b) * s
            for k in range(int(rng.integers(3, 6))):
                px, py = bx + rng.uniform(-0.04, 0.04) * s, by + rng.uniform(-0.03, 0.03) * s
                angle = rng.uniform(0, math.pi)
                length = 0.022 * s
                draw.line([(px, py), (px + length * math.cos(angle), py + length * math.sin(angle))], fill=220,
                          width=max(2, s // 110))

    @staticmethod
    def _curve(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: int, width: int) -> None:
        """A cubic Bezier through 4 control points, drawn as a polyline."""
        t = np.linspace(0.0, 1.0, 40)[:, None]
        p = np.asarray(points, dtype=np.float64)
        curve = ((1 - t) ** 3) * p[0] + 3 * ((1 - t) ** 2) * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
        draw.line([tuple(point) for point in curve], fill=fill, width=width, joint="curve")


def render_phantom(findings: Sequence[PhantomFinding], *, seed: int = 0, image_size: int = 224) -> Image.Image:
    """Render one phantom radiograph ("L" mode) showing `findings`; an empty list gives a normal chest.

    Example:
        >>> render_phantom([PhantomFinding("effusion", side="left")], seed=1).size
        (224, 224)
    """
    for f in findings:
        if f.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {f.kind!r}; expected one of {FINDING_KINDS}")
    return _Renderer(image_size).render(findings, np.random.default_rng(seed))


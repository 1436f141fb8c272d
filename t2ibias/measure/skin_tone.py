"""Perceived skin tone of a face crop from its pixels: nearest Monk Skin Tone swatch and ITA.

A measurer with no model weights, for the padded face crops a face gate produces. Four steps:

1. **Where to look.** Only pixels inside a centred ellipse of the crop count (default semi-axes
   0.30 × 0.33 of the crop's width × height, centre a little below the middle). A gate crop is the
   face box padded by a quarter on each side, so the ellipse holds cheeks, nose, forehead and chin
   and leaves out most background, hair and neck. Crops longer than ``max_side`` (64) pixels are
   first shrunk by area averaging: the ellipse then still holds about 1,300 pixels, plenty for a
   colour statistic, and the cost per crop is bounded. Pixel counts are at that analysis
   resolution.

2. **Which pixels are skin.** The default rule (``rule="lab"``) works in CIELAB: a pixel is skin
   when its hue angle h_ab = atan2(b*, a*) lies in [30°, 100°] (the orange-yellow quadrant where
   melanin and haemoglobin put skin colours; lips, red cloth and blue/green backgrounds fall
   outside), its chroma C*_ab lies in [3, 45] (greys, whites of the eyes and black hair have less;
   vivid orange paint more) and its lightness L* lies in [10, 97] (rejects deep shadow, black hair
   and blown highlights). The classic explicit rules used by peer pipelines (HEIM, Lee et al.
   2023, detects skin pixels with RGB and YCrCb rules) are available as ``rule="rgb-ycrcb"``: the
   RGB rule of Kovač, Peer & Solina (2003, "Human skin colour clustering for face detection"; the
   daylight rule or its flash/lateral-light variant) AND the Cr/Cb box of Chai & Ngan (1999,
   "Face segmentation using skin-color map in videophone applications"; 133 ≤ Cr ≤ 173,
   77 ≤ Cb ≤ 127). They are not the default because their fixed thresholds exclude the darkest
   swatches: MST 9 and 10 have R < 95 (and MST 10 has Cr < 133), so a measurer built on them
   abstains on exactly the tones a bias measurement must see (a test shows this on the swatches
   themselves).

3. **Dominant colour.** The skin pixels' CIELAB values (``skimage.color.rgb2lab``, sRGB, D65)
   are ranked by L*; the darkest ``trim_dark`` and brightest ``trim_bright`` fractions are dropped
   and the rest averaged (an L*-trimmed mean). Shadows (eye sockets, under the chin, nostrils,
   dark hair that passed the rule) cover more of a face than specular highlights, hence the
   asymmetric defaults 0.25 / 0.10. It is deterministic and vectorizes across crops, unlike a
   per-crop k-means.

4. **Swatch and ITA.** The dominant colour is matched to the ten Monk Skin Tone swatches
   (Monk 2019; hex values in ``annotations/monk_skin_tone.csv``) by CIEDE2000 colour difference
   (``skimage.color.deltaE_ciede2000``; Sharma, Wu & Dalal 2005). The probabilities reported are
   a softmax over −ΔE00 / ``temperature``: a swatch ``temperature`` ΔE units farther away than
   another gets 1/e of its weight (ΔE00 ≈ 1-2 is about a just-noticeable difference, hence the
   default 2). The individual typology angle ITA = arctan((L* − 50) / b*) · 180/π (Chardon,
   Cretois & Hourseau 1991) is reported with its category (Del Bino et al. 2006): very light
   > 55°, light 41-55°, intermediate 28-41°, tan 10-28°, brown −30-10°, dark ≤ −30° (a boundary
   value belongs to the darker category).

A crop abstains (label ``"abstain"``) when it has fewer than ``min_skin_pixels`` skin pixels or
they cover less than ``min_skin_fraction`` of the ellipse. The colour, ITA and nearest swatch of a
crop that abstains for that reason are still reported by :meth:`PixelSkinTone.measure_one`; a crop
with no skin pixel at all has NaN colour, no nearest swatch and empty probabilities.

The result is *perceived* skin tone under the image's own lighting and white balance, which
generated images do not calibrate; compare groups of images made the same way, never a person's
identity. Shading darkens photographed skin against the flat swatches, and MST 1-4 lie within a
few ΔE00 of one another: the face in ``skimage.data.astronaut()`` has L* ≈ 76 and ITA ≈ 57°
("very light") yet its nearest swatch is MST 5 (ΔE00 7.0; MST 4 is 11.9 away).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from t2ibias.core.errors import UserError
from t2ibias.core.fingerprint import fingerprint
from t2ibias.core.vocab import ABSTAIN
from t2ibias.models.clip_zeroshot import Prediction
from t2ibias.core.paths import annotations_dir

#: MST swatches 1 (lightest) to 10 (darkest), as published with the scale (RESEARCH.md §5).
#: Used only when ``annotations/monk_skin_tone.csv`` is absent (removed by hand); a test checks
#: the two agree.
MST_HEX: tuple[str, ...] = (
    "#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96",
    "#a07e56", "#825c43", "#604134", "#3a312a", "#292420",
)
MST_LABELS: tuple[str, ...] = tuple(str(i) for i in range(1, 11))

#: ITA categories, lightest first, with the lower bound (exclusive) of each (Del Bino et al. 2006).
ITA_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("very light", 55.0),
    ("light", 41.0),
    ("intermediate", 28.0),
    ("tan", 10.0),
    ("brown", -30.0),
    ("dark", -math.inf),
)

#: Bounds of the default CIELAB skin rule (see the module docstring).
LAB_RULE: dict[str, tuple[float, float]] = {
    "hue_deg": (30.0, 100.0),
    "chroma": (3.0, 45.0),
    "lightness": (10.0, 97.0),
}
RULES = ("lab", "rgb-ycrcb")

_CHUNK_PIXELS = 1 << 20  # pixels converted to CIELAB at once (bounds memory for thousands of crops)


def load_mst_swatches(path: Path | None = None) -> tuple[str, ...]:
    """The ten MST hex swatches, MST 1 first, from ``annotations/monk_skin_tone.csv``.

    Falls back to :data:`MST_HEX` when the file (the default path) does not exist; a file that
    exists but is malformed is an error.
    """
    explicit = path is not None
    path = Path(path) if explicit else annotations_dir() / "monk_skin_tone.csv"
    if not path.is_file():
        if explicit:
            raise UserError(f"{path}: MST swatch file not found (pass the path of monk_skin_tone.csv)")
        return MST_HEX
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    fix = "(restore it from annotations/monk_skin_tone.csv in the repository)"
    if [r.get("mst") for r in rows] != list(MST_LABELS):
        raise UserError(f"{path}: column `mst` must list 1..10 in order, one row each {fix}")
    out = []
    for r in rows:
        hex_ = (r.get("hex") or "").strip().lower()
        try:
            rgb = tuple(int(hex_[i : i + 2], 16) for i in (1, 3, 5)) if len(hex_) == 7 and hex_[0] == "#" else None
            listed = tuple(int(r[k]) for k in ("r", "g", "b"))
        except (KeyError, TypeError, ValueError):
            rgb, listed = None, None
        if rgb is None or rgb != listed:
            raise UserError(f"{path}: row mst={r['mst']}: hex {hex_!r} is not #rrggbb matching columns r,g,b {fix}")
        out.append(hex_)
    return tuple(out)


def hex_to_rgb(hex_: str) -> tuple[int, int, int]:
    return int(hex_[1:3], 16), int(hex_[3:5], 16), int(hex_[5:7], 16)


def ita_degrees(lightness: Any, b: Any) -> Any:
    """ITA = arctan((L* − 50) / b*) · 180/π; NaN where b* ≤ 0 (no yellow component: not skin)."""
    lightness, b = np.asarray(lightness, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ita = np.degrees(np.arctan((lightness - 50.0) / b))
    ita = np.where(b > 0, ita, np.nan)
    return float(ita) if ita.ndim == 0 else ita


def ita_category(ita: float) -> str | None:
    """The ITA category name, or None for NaN."""
    if ita is None or not np.isfinite(ita):
        return None
    for name, lower in ITA_CATEGORIES:
        if ita > lower:
            return name
    return ITA_CATEGORIES[-1][0]


def skin_mask(rgb: np.ndarray, lab: np.ndarray, rule: str = "lab") -> np.ndarray:
    """Boolean skin mask for pixels given as uint8 sRGB ``(..., 3)`` and their CIELAB ``(..., 3)``."""
    if rule == "lab":
        lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
        chroma = np.hypot(a, b)
        hue = np.degrees(np.arctan2(b, a))
        (h0, h1), (c0, c1), (l0, l1) = LAB_RULE["hue_deg"], LAB_RULE["chroma"], LAB_RULE["lightness"]
        return (hue >= h0) & (hue <= h1) & (chroma >= c0) & (chroma <= c1) & (lightness >= l0) & (lightness <= l1)
    if rule == "rgb-ycrcb":
        c = rgb.astype(np.int16)
        r, g, b = c[..., 0], c[..., 1], c[..., 2]
        spread = c.max(axis=-1) - c.min(axis=-1)
        daylight = (r > 95) & (g > 40) & (b > 20) & (spread > 15) & (np.abs(r - g) > 15) & (r > g) & (r > b)
        flash = (r > 220) & (g > 210) & (b > 170) & (np.abs(r - g) <= 15) & (r > b) & (g > b)
        cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b  # ITU-R BT.601 full range (JPEG)
        cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
        return (daylight | flash) & (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
    raise UserError(f"skin rule {rule!r}: unknown (use one of {', '.join(RULES)})")


@dataclass(frozen=True)
class SkinToneResult:
    """The skin-tone measurement of one crop."""

    label: str  # "1".."10", or "abstain"
    nearest: str | None  # nearest MST swatch even when abstaining; None when no skin pixel at all
    lab: tuple[float, float, float]  # dominant skin colour (CIELAB, D65); NaN without skin pixels
    ita: float  # degrees; NaN without skin pixels
    ita_category: str | None
    n_skin: int  # skin pixels inside the ellipse, at analysis resolution
    skin_fraction: float  # n_skin / pixels inside the ellipse
    delta_e: dict[str, float]  # CIEDE2000 to each swatch, "1".."10"; empty without skin pixels
    probs: dict[str, float]  # softmax over −ΔE / temperature; empty without skin pixels
    abstain_reason: str = ""  # why label is "abstain"; empty otherwise

    def to_prediction(self) -> Prediction:
        """The attribute prediction the measure stage stores (score and margin NaN without skin)."""
        if not self.probs:
            return Prediction(label=ABSTAIN, top_label=ABSTAIN, score=math.nan, margin=math.nan, probs={})
        ranked = sorted(self.probs.values(), reverse=True)
        return Prediction(
            label=self.label,
            top_label=self.nearest or ABSTAIN,
            score=ranked[0],
            margin=ranked[0] - ranked[1],
            probs=dict(self.probs),
        )


@dataclass(frozen=True)
class PixelSkinTone:
    """Perceived skin tone (MST swatch and ITA) of face crops from their pixels; see the module doc."""

    min_skin_pixels: int = 50  # fewer skin pixels (at analysis resolution) → abstain
    min_skin_fraction: float = 0.15  # skin pixels over ellipse pixels below this → abstain
    temperature: float = 2.0  # ΔE00 units of the softmax over swatches
    rule: str = "lab"  # skin-pixel rule: "lab" or "rgb-ycrcb"
    ellipse_axes: tuple[float, float] = (0.30, 0.33)  # semi-axes, fractions of crop width, height
    ellipse_center: tuple[float, float] = (0.50, 0.56)  # fractions of crop width, height
    trim_dark: float = 0.25  # fraction of skin pixels dropped from the dark end (by L*)
    trim_bright: float = 0.10  # ... and from the bright end
    max_side: int = 64  # longer crops are shrunk by area averaging to this side first

    id: ClassVar[str] = "pixel-mst"
    attributes: ClassVar[tuple[str, ...]] = ("skin_tone",)
    _swatch_hex: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, need: str) -> UserError:
            return UserError(f"PixelSkinTone {name}={value!r}: {need} (fix the argument)")

        for name in ("min_skin_fraction", "temperature", "trim_dark", "trim_bright"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, value, "must be a number")
        for name in ("ellipse_axes", "ellipse_center"):  # lists (from YAML) become hashable tuples
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, tuple(float(v) for v in value))
            except (TypeError, ValueError):
                raise bad(name, value, "must be two numbers") from None
        if not isinstance(self.min_skin_pixels, int) or isinstance(self.min_skin_pixels, bool) or self.min_skin_pixels < 1:
            raise bad("min_skin_pixels", self.min_skin_pixels, "must be an integer >= 1")
        if not 0.0 <= self.min_skin_fraction <= 1.0:
            raise bad("min_skin_fraction", self.min_skin_fraction, "must lie in [0, 1]")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise bad("temperature", self.temperature, "must be a positive number")
        if self.rule not in RULES:
            raise bad("rule", self.rule, f"must be one of {', '.join(RULES)}")
        if len(self.ellipse_axes) != 2 or not all(0 < v <= 1 for v in self.ellipse_axes):
            raise bad("ellipse_axes", self.ellipse_axes, "must be two fractions in (0, 1]")
        if len(self.ellipse_center) != 2 or not all(0 <= v <= 1 for v in self.ellipse_center):
            raise bad("ellipse_center", self.ellipse_center, "must be two fractions in [0, 1]")
        if not (0 <= self.trim_dark < 1 and 0 <= self.trim_bright < 1 and self.trim_dark + self.trim_bright < 1):
            raise bad("trim_dark+trim_bright", (self.trim_dark, self.trim_bright), "each in [0, 1) and their sum < 1")
        if not isinstance(self.max_side, int) or self.max_side < 8:
            raise bad("max_side", self.max_side, "must be an integer >= 8")
        object.__setattr__(self, "_swatch_hex", load_mst_swatches())

    # -- identity --------------------------------------------------------------------------------

    @property
    def swatches(self) -> dict[str, str]:
        """MST label → hex, as used for matching."""
        return dict(zip(MST_LABELS, self._swatch_hex))

    def config(self) -> dict[str, Any]:
        """The settings, as the ``pixel-mst`` measurer kind takes them."""
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "_swatch_hex"}
        return {"kind": self.id, **params}

    def fingerprint(self) -> str:
        import skimage

        params = {k: v for k, v in asdict(self).items() if k != "_swatch_hex"}
        return fingerprint(
            {
                "measurer": self.id,
                **params,
                "lab_rule": LAB_RULE,
                "swatches": list(self._swatch_hex),
                "skimage": skimage.__version__,
            }
        )

    # -- measuring -------------------------------------------------------------------------------

    def measure_one(self, crop: Any) -> SkinToneResult:
        """Measure one PIL face crop."""
        return self.measure_results([crop])[0]

    def measure(self, crops: list[Any]) -> list[dict[str, Prediction]]:
        """One ``{"skin_tone": Prediction}`` per crop, in order (label "1".."10" or "abstain")."""
        return [{self.attributes[0]: r.to_prediction()} for r in self.measure_results(crops)]

    def measure_results(self, crops: list[Any]) -> list[SkinToneResult]:
        """Full per-crop results for a list of PIL crops (vectorized across crops)."""
        from skimage.color import deltaE_ciede2000, rgb2lab

        crops = list(crops)
        pixels = [self._ellipse_pixels(i, c) for i, c in enumerate(crops)]
        n_crops = len(pixels)
        n_ellipse = np.array([len(p) for p in pixels], dtype=np.int64)
        n_skin = np.zeros(n_crops, dtype=np.int64)
        lab_mean = np.full((n_crops, 3), np.nan)
        start = 0
        while start < n_crops:  # chunks of about _CHUNK_PIXELS pixels
            stop, total = start, 0
            while stop < n_crops and (stop == start or total + n_ellipse[stop] <= _CHUNK_PIXELS):
                total += int(n_ellipse[stop])
                stop += 1
            rgb = np.concatenate(pixels[start:stop], axis=0)
            group = np.repeat(np.arange(stop - start), n_ellipse[start:stop])
            lab = rgb2lab(rgb.astype(np.float64) / 255.0) if len(rgb) else np.zeros((0, 3))
            skin = skin_mask(rgb, lab, self.rule)
            n_skin[start:stop], lab_mean[start:stop] = self._trimmed_mean(lab[skin], group[skin], stop - start)
            start = stop

        swatch_lab = rgb2lab(np.array([hex_to_rgb(h) for h in self._swatch_hex], dtype=np.float64) / 255.0)
        has_skin = n_skin > 0
        delta = np.full((n_crops, len(MST_LABELS)), np.nan)
        if has_skin.any():
            delta[has_skin] = deltaE_ciede2000(lab_mean[has_skin][:, None, :], swatch_lab[None, :, :])
        probs = np.full_like(delta, np.nan)
        if has_skin.any():
            logits = -delta[has_skin] / self.temperature
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[has_skin] = weights / weights.sum(axis=1, keepdims=True)
        ita = ita_degrees(lab_mean[:, 0], lab_mean[:, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(n_ellipse > 0, n_skin / np.maximum(n_ellipse, 1), 0.0)

        out = []
        for i in range(n_crops):
            if not has_skin[i]:
                out.append(
                    SkinToneResult(
                        label=ABSTAIN, nearest=None, lab=(math.nan, math.nan, math.nan), ita=math.nan,
                        ita_category=None, n_skin=0, skin_fraction=0.0, delta_e={}, probs={},
                        abstain_reason="no skin-coloured pixel in the face ellipse",
                    )
                )
                continue
            nearest = MST_LABELS[int(np.argmin(delta[i]))]
            reason = ""
            if n_skin[i] < self.min_skin_pixels:
                reason = f"{n_skin[i]} skin pixels < min_skin_pixels={self.min_skin_pixels}"
            elif fraction[i] < self.min_skin_fraction:
                reason = f"skin fraction {fraction[i]:.3f} < min_skin_fraction={self.min_skin_fraction}"
            out.append(
                SkinToneResult(
                    label=ABSTAIN if reason else nearest,
                    nearest=nearest,
                    lab=(float(lab_mean[i, 0]), float(lab_mean[i, 1]), float(lab_mean[i, 2])),
                    ita=float(ita[i]),
                    ita_category=ita_category(float(ita[i])),
                    n_skin=int(n_skin[i]),
                    skin_fraction=float(fraction[i]),
                    delta_e={lab: float(v) for lab, v in zip(MST_LABELS, delta[i])},
                    probs={lab: float(v) for lab, v in zip(MST_LABELS, probs[i])},
                    abstain_reason=reason,
                )
            )
        return out

    def _ellipse_pixels(self, index: int, crop: Any) -> np.ndarray:
        """uint8 ``(n, 3)`` sRGB pixels of a crop inside the face ellipse."""
        from PIL import Image

        if not isinstance(crop, Image.Image):
            raise UserError(
                f"skin tone crop {index}: a {type(crop).__name__}, not a PIL image "
                "(pass PIL.Image crops, e.g. from the face gate's crop())"
            )
        w, h = crop.size
        if w == 0 or h == 0:
            raise UserError(f"skin tone crop {index}: zero size {w}x{h} (pass a face crop with a non-empty box)")
        if max(w, h) > self.max_side:
            s = self.max_side / max(w, h)
            w, h = max(1, round(w * s)), max(1, round(h * s))
            crop = crop.convert("RGB").resize((w, h), Image.Resampling.BOX)
        arr = np.asarray(crop.convert("RGB"), dtype=np.uint8)
        return arr[_ellipse_mask(h, w, self.ellipse_axes, self.ellipse_center)]

    def _trimmed_mean(self, lab: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-group skin pixel counts and L*-trimmed mean CIELAB (NaN for groups with none)."""
        counts = np.bincount(group, minlength=n_groups)
        means = np.full((n_groups, 3), np.nan)
        if not len(group):
            return counts, means
        # one sort by (crop, L*): L* lies in [0, 100], so crop * 128 + L* orders both at once
        order = np.argsort(group * 128.0 + np.clip(lab[:, 0], 0.0, 100.0))
        lab, group = lab[order], group[order]
        first = np.cumsum(counts) - counts
        rank = np.arange(len(group)) - first[group]
        lo = np.floor(self.trim_dark * counts).astype(np.int64)
        hi = counts - np.floor(self.trim_bright * counts).astype(np.int64)
        keep = (rank >= lo[group]) & (rank < hi[group])
        kept = np.bincount(group[keep], minlength=n_groups)
        for c in range(3):
            sums = np.bincount(group[keep], weights=lab[keep, c], minlength=n_groups)
            with np.errstate(divide="ignore", invalid="ignore"):
                means[:, c] = np.where(kept > 0, sums / np.maximum(kept, 1), np.nan)
        return counts, means


_ELLIPSES: dict[tuple[int, int, tuple[float, float], tuple[float, float]], np.ndarray] = {}


def _ellipse_mask(h: int, w: int, axes: tuple[float, float], center: tuple[float, float]) -> np.ndarray:
    """Boolean ``(h, w)`` mask of pixel centres inside the ellipse (cached per shape)."""
    key = (h, w, tuple(axes), tuple(center))
    mask = _ELLIPSES.get(key)
    if mask is None:
        yy, xx = np.mgrid[0:h, 0:w]
        dx = (xx + 0.5 - center[0] * w) / (axes[0] * w)
        dy = (yy + 0.5 - center[1] * h) / (axes[1] * h)
        mask = dx * dx + dy * dy <= 1.0
        if not mask.any():  # a crop a few pixels wide: use its central pixel
            mask[min(h - 1, int(center[1] * h)), min(w - 1, int(center[0] * w))] = True
        if len(_ELLIPSES) < 4096:
            _ELLIPSES[key] = mask
    return mask

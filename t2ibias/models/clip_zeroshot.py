"""CLIP zero-shot perceived-attribute classification through open_clip.

Each label's text embedding is the renormalized mean over (template × label prompt) embeddings
(a prompt ensemble, as in Radford et al. 2021). Probabilities are a softmax of
``logit_scale · cosine``; a prediction whose top-two probability margin is below the attribute's
``abstain_margin`` is an abstention, counted in its own bin.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2ibias.core.errors import UserError
from t2ibias.models.classifier_spec import ClassifierSpec
from t2ibias.core.paths import cache_dir
from t2ibias.core.safe_load import refuse_code, weights_only_loads
from t2ibias.core.vocab import ABSTAIN

TINY_PRETRAINED = "tiny:"
#: Precisions the image tower can run in; anything but float32 is autocast on a CUDA device.
PRECISIONS = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Prediction:
    label: str  # a label of the attribute, or "abstain"
    top_label: str
    score: float  # probability of the top label
    margin: float
    probs: dict[str, float]


def _register_arch(spec: ClassifierSpec) -> None:
    import open_clip

    if spec.arch_config is None or open_clip.get_model_config(spec.arch) is not None:
        return
    folder = cache_dir() / "open_clip_configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.arch}.json"
    path.write_text(json.dumps(spec.arch_config, indent=2))
    open_clip.add_model_config(path)


def tiny_clip_checkpoint(spec: ClassifierSpec) -> Path:
    """Build (once) and save the random-weight checkpoint of a tiny classifier."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    target = cache_dir() / "models" / f"{spec.id}-{spec.fingerprint()}.safetensors"
    if target.is_file():
        return target
    _register_arch(spec)
    torch.manual_seed(0)
    model = open_clip.create_model(spec.arch, pretrained=None, force_quick_gelu=spec.quick_gelu)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=target.parent)
    os.close(fd)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, target)
    return target


def ensure_classifier_weights(spec: ClassifierSpec) -> None:
    """Find (or fetch) a classifier's weights now, so a sweep fails before generating, not after.

    A local checkpoint must exist; an open_clip pretrained tag is looked up in the local cache and
    downloaded if missing (open_clip's own download, into the Hugging Face cache).
    """
    pretrained = spec.pretrained
    if pretrained in (None, TINY_PRETRAINED):
        return
    path = Path(pretrained).expanduser()
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
        if not path.is_file():
            raise UserError(f"classifier {spec.id!r}: checkpoint {pretrained} not found (fix `pretrained:` in {spec.path})")
        return
    import open_clip.pretrained as ocp

    cfg = ocp.get_pretrained_cfg(spec.arch, pretrained)
    if not cfg:
        raise UserError(
            f"classifier {spec.id!r}: open_clip has no pretrained tag {pretrained!r} for {spec.arch} "
            f"(fix `pretrained:` in {spec.path}; open_clip.list_pretrained() lists them)"
        )
    try:
        ocp.download_pretrained(cfg)
    except Exception as exc:  # network and hub errors come in many types
        raise UserError(CLIPAttributeClassifier(spec)._missing(str(exc))) from None


_HASHES: dict[tuple[str, int, int], str] = {}


def weights_identity(spec: ClassifierSpec, weights: str | None) -> str:
    """What the loaded weights are: the open_clip tag, or the sha256 of the checkpoint file."""
    if weights is None:
        return "none"
    path = Path(weights).expanduser()
    if not path.is_file():
        return f"open_clip:{spec.arch}:{weights}"
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        from t2ibias.core.fingerprint import file_sha256

        _HASHES[memo] = file_sha256(path)
    return f"sha256:{_HASHES[memo]}"


def text_cache_path(spec: ClassifierSpec, weights: str | None, device: str) -> Path:
    """Where the label-prompt embeddings of ``spec`` with ``weights`` on ``device`` are cached."""
    from t2ibias.core.fingerprint import fingerprint

    kind = str(device).split(":")[0]
    key = fingerprint({"spec": spec.fingerprint(), "weights": weights_identity(spec, weights), "device": kind})
    return cache_dir() / "text_embeddings" / f"{spec.id}-{key}.safetensors"


class CLIPAttributeClassifier:
    """Zero-shot classifier for every attribute of a :class:`ClassifierSpec`; a measurer
    (``id``, ``fingerprint()``, ``config()``, ``measure(crops)``) like any other."""

    def __init__(self, spec: ClassifierSpec, device: str = "cpu", precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if precision != "float32" and str(device).split(":")[0] != "cuda":
            raise ValueError(f"precision {precision}: only on a CUDA device (got {device}); use float32")
        self.spec = spec
        self.device = device
        self.precision = precision
        self.model: Any = None
        self.preprocess: Any = None
        self._text: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.spec.id

    def fingerprint(self) -> str:
        """The classifier spec's fingerprint (architecture, weights tag, preprocessing, prompts,
        margins), with the precision when it is not float32."""
        if self.precision == "float32":
            return self.spec.fingerprint()
        from t2ibias.core.fingerprint import fingerprint

        return fingerprint({"classifier": self.spec.fingerprint(), "precision": self.precision})

    def config(self) -> dict[str, Any]:
        return {"kind": "clip", **self.spec.summary()}

    def measure(self, crops: list[Any]) -> list[dict[str, Prediction]]:
        """One dict attribute → prediction per crop (PIL images)."""
        return self.classify(crops)

    def load(self) -> None:
        import open_clip

        _register_arch(self.spec)
        pretrained = self.spec.pretrained
        if pretrained == TINY_PRETRAINED:
            pretrained = str(tiny_clip_checkpoint(self.spec))
        pre = self.spec.preprocess
        try:
            with weights_only_loads():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.spec.arch,
                    pretrained=pretrained,
                    force_quick_gelu=self.spec.quick_gelu,
                    force_image_size=pre["image_size"],
                    image_mean=tuple(pre["mean"]),
                    image_std=tuple(pre["std"]),
                    image_interpolation=pre["interpolation"],
                    image_resize_mode=pre["resize_mode"],
                    device=self.device,
                )
        except pickle.UnpicklingError:
            if pretrained and Path(pretrained).expanduser().is_file():
                refuse_code(Path(pretrained).expanduser(), f"classifier {self.spec.id!r}: pretrained")
            raise UserError(self._missing("not a torch.save checkpoint, or a damaged one")) from None
        except RuntimeError as exc:
            reason = str(exc).lower()
            if "pretrained" in reason or "not found" in reason or "download" in reason:
                raise UserError(self._missing(str(exc))) from None
            raise
        except (OSError, ValueError) as exc:
            raise UserError(self._missing(str(exc))) from None
        model.eval()
        self.model, self.preprocess = model, preprocess
        self._text = self._cached_text_embeddings(pretrained)

    def _cached_text_embeddings(self, weights: str | None) -> dict[str, Any]:
        """Label embeddings from the disk cache, else encoded now and cached.

        Keyed by the spec fingerprint (templates, prompts, architecture, temperature), the
        weights identity (open_clip tag, or the checkpoint file's hash) and the device kind, so
        an edited prompt or a swapped checkpoint never reuses stale embeddings.
        """
        from safetensors.torch import load_file, save_file

        if weights is None:  # freshly initialized random weights: nothing stable to key a cache on
            return self._encode_label_prompts()
        path = text_cache_path(self.spec, weights, self.device)
        if path.is_file():
            try:
                stored = load_file(str(path), device=str(self.device))
                if set(stored) == set(self.spec.attributes):
                    return {name: stored[name] for name in self.spec.attributes}
            except Exception:  # a torn or foreign file: encode again and replace it
                pass
        text = self._encode_label_prompts()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in text.items()}, tmp)
            os.replace(tmp, path)
        except OSError:  # a read-only cache only costs the re-encoding next time
            Path(tmp).unlink(missing_ok=True)
        return text

    def _encode_label_prompts(self) -> dict[str, Any]:
        import open_clip
        import torch

        tokenizer = open_clip.get_tokenizer(self.spec.arch)
        out = {}
        with torch.no_grad():
            for name, attr in self.spec.attributes.items():
                rows = []
                for prompts in attr.labels.values():
                    texts = [t.format(p) for t in self.spec.templates for p in prompts]
                    emb = self.model.encode_text(tokenizer(texts).to(self.device)).float()
                    emb = emb / emb.norm(dim=-1, keepdim=True)
                    mean = emb.mean(dim=0)
                    rows.append(mean / mean.norm())
                out[name] = torch.stack(rows)
        return out

    def _missing(self, reason: str) -> str:
        return (
            f"classifier {self.spec.id!r}: cannot load {self.spec.arch} weights {self.spec.pretrained!r} "
            f"({reason.splitlines()[0][:160]}); download them where there is network or set `pretrained:` "
            "in the classifier file to a local .pt/.safetensors checkpoint"
        )

    def encode_images(self, images: list[Any]) -> Any:
        return self.encode_pixels(self.preprocess_images(images))

    def preprocess_images(self, images: list[Any]) -> Any:
        """The pinned preprocessing of PIL images, stacked on the CPU (safe in a worker thread)."""
        import torch

        if self.model is None:
            self.load()
        return torch.stack([self.preprocess(img) for img in images])

    def encode_pixels(self, batch: Any) -> Any:
        """L2-normalized image features of a preprocessed batch (as :meth:`preprocess_images` makes)."""
        import torch

        if self.model is None:
            self.load()
        with torch.no_grad():
            if self.precision == "float32":
                feats = self.model.encode_image(batch.to(self.device, non_blocking=True)).float()
            else:  # autocast: matmuls and convolutions in half precision, norms and softmax in float32
                with torch.autocast("cuda", dtype=getattr(torch, self.precision)):
                    feats = self.model.encode_image(batch.to(self.device, non_blocking=True)).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def classify(self, images: list[Any]) -> list[dict[str, Prediction]]:
        """One dict attribute → prediction per image."""
        if not images:
            return []
        return self.predict(self.encode_images(images))

    def predict(self, feats: Any) -> list[dict[str, Prediction]]:
        """Predictions from L2-normalized image features (as :meth:`encode_images` returns)."""
        out: list[dict[str, Prediction]] = [{} for _ in range(len(feats))]
        for name, attr in self.spec.attributes.items():
            labels = list(attr.labels)
            probs = (self.spec.logit_scale * feats @ self._text[name].T).softmax(dim=-1).cpu().numpy()
            for i, p in enumerate(probs):
                order = p.argsort()[::-1]
                top, second = float(p[order[0]]), float(p[order[1]])
                margin = top - second
                label = labels[order[0]]
                out[i][name] = Prediction(
                    label=ABSTAIN if margin < attr.abstain_margin else label,
                    top_label=label,
                    score=top,
                    margin=margin,
                    probs={lab: float(v) for lab, v in zip(labels, p)},
                )
        return out

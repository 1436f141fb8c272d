"""The open_clip zero-shot runner of FACET classification: the top-1 class of every person alone
in an image, from the whole image, by a classifier named by a t2ibias classifier id or YAML path.

Each class is prompted with an ensemble of templates (:data:`CLASS_TEMPLATES`) whose text
embeddings are averaged; images are decoded and preprocessed ahead on worker threads
(:func:`t2ibias.core.prefetch.prefetch_batches`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from facet_eval.data import single_person_mask
from facet_eval.data import FacetData, canonical_class
from facet_eval.runners.images import read_image_pil
from t2ibias.core.errors import UserError
from t2ibias.core.prefetch import prefetch_batches

DEFAULT_MODEL = "clip-vit-b-32-openai"
#: Prompt ensemble for class names; ``{a}`` is the indefinite article of the class, ``{c}`` the class.
CLASS_TEMPLATES = (
    "a photo of {a} {c}.",
    "a photo of the {c}.",
    "a photo of a person who is {a} {c}.",
    "a cropped photo of {a} {c}.",
)


def _article(cls: str) -> str:
    return "an" if cls[:1].lower() in "aeiou" else "a"


def class_prompts(cls: str) -> list[str]:
    """The prompt ensemble of one class, e.g. ``a photo of a nurse.``, ``a photo of an astronaut.``;
    a class written with underscores is prompted in words (``a photo of a disk jockey.``)."""
    words = canonical_class(cls)
    return [t.format(a=_article(words), c=words) for t in CLASS_TEMPLATES]


def class_text_embeddings(model: Any, tokenizer: Any, classes: list[str], device: str) -> Any:
    """``(C, D)`` L2-normalized text embeddings, each the renormalized mean over the class's prompts."""
    import torch

    prompts = [p for c in classes for p in class_prompts(c)]
    with torch.no_grad():
        emb = model.encode_text(tokenizer(prompts).to(device)).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    mean = emb.reshape(len(classes), len(CLASS_TEMPLATES), -1).mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)


def iter_image_batches(paths: list[Path], preprocess: Callable[[Any], Any], batch_size: int,
                       workers: int | None = None, ahead: int = 2) -> Iterator[Any]:
    """Stacked preprocessed batches of ``paths`` in order, the next ``ahead`` batches decoded and
    preprocessed on ``workers`` threads while the caller computes on the current one."""
    import torch

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    batches = prefetch_batches(paths, lambda p: preprocess(read_image_pil(p)), batch_size, workers, ahead,
                               thread_name="facet-decode")
    with closing(batches):
        for batch in batches:
            yield torch.stack(batch)


def encode_batch(classifier: Any, batch: Any) -> Any:
    """L2-normalized image features of a preprocessed batch, as ``encode_images`` computes them."""
    import torch

    with torch.no_grad():
        feats = classifier.model.encode_image(batch.to(classifier.device)).float()
    return feats / feats.norm(dim=-1, keepdim=True)


def predict_with_clip(
    data: FacetData,
    model_id: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[int, str], dict[str, Any]]:
    """Zero-shot top-1 class of every single-person person from the whole image, with an
    open_clip classifier named by a t2ibias classifier id or YAML path.

    Returns the predictions (person_id → class) and the model description for ``run.json``.
    """
    import open_clip
    import torch

    from t2ibias.core.device import resolve_device
    from t2ibias.models.classifier_spec import resolve_classifier_spec
    from t2ibias.models.clip_zeroshot import CLIPAttributeClassifier

    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} is not a positive number (use e.g. 64)")
    spec = resolve_classifier_spec(model_id)
    dev = resolve_device(device)
    pids, paths = _single_person_images(data)

    classifier = CLIPAttributeClassifier(spec, device=dev)
    classifier.load()
    tokenizer = open_clip.get_tokenizer(spec.arch)
    classes = data.classes
    text = class_text_embeddings(classifier.model, tokenizer, classes, dev)

    top: list[int] = []
    for batch in iter_image_batches(paths, classifier.preprocess, batch_size, workers):
        feats = encode_batch(classifier, batch)
        top.extend((feats @ text.T).argmax(dim=1).cpu().tolist())
        if progress is not None:
            progress(len(top), len(paths))
    predictions = {p: classes[k] for p, k in zip(pids, top)}
    info = {
        "name": spec.id,
        "parameters": {
            "classifier": spec.id, "arch": spec.arch, "pretrained": spec.pretrained, "quick_gelu": spec.quick_gelu,
            "image_size": spec.preprocess.get("image_size"), "templates": list(CLASS_TEMPLATES),
            "random_weights": spec.random_weights, "fingerprint": spec.fingerprint(),
        },
        "device": dev,
        "torch": torch.__version__,
        "open_clip": getattr(open_clip, "__version__", "unknown"),
    }
    return predictions, info


def _single_person_images(data: FacetData) -> tuple[list[int], list[Path]]:
    """The person ids of the single-person people and the paths of their images, by image id."""
    single = single_person_mask(data)
    people = data.people[single]
    order = np.argsort(people["image_id"].to_numpy(), kind="stable")
    pids = [int(p) for p in people["person_id"].to_numpy()[order]]
    image_ids = [int(i) for i in people["image_id"].to_numpy()[order]]
    paths_by_id = data.image_paths() if pids else {}
    return pids, [paths_by_id[i] for i in image_ids]

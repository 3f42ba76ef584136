"""Backbones and the model wrapper every method trains.

``build_model(name, num_classes, in_channels=1, image_size=48, **options) -> FERModel``;
``list_backbones()`` gives the registered names; ``load_pretrained(model, path)`` loads a
torchvision-format ResNet state dict (face-recognition checkpoints) into a model.

Registered backbones: ``resnet18/34/50`` (torchvision names, ``stem="auto"|"small"|"imagenet"``),
``compact`` / ``compact_wide`` (fast CPU CNNs for 48-64 px), ``vit_tiny/small/base``,
``mobilenet_v1`` (with the shipped VGGFace2 face-recognition weights, ``PRETRAINED``).
"""

from ferkit.models import compact, mobilenet, resnet, vit  # noqa: F401  (registers the backbones)
from ferkit.models.base import Backbone, FERModel
from ferkit.models.pretrained import PRETRAINED, load_pretrained, recalibrate_batchnorm
from ferkit.models.registry import MODELS, backbone_options, build_model, list_backbones, register_model

__all__ = [
    "MODELS",
    "PRETRAINED",
    "Backbone",
    "FERModel",
    "backbone_options",
    "build_model",
    "list_backbones",
    "load_pretrained",
    "recalibrate_batchnorm",
    "register_model",
]

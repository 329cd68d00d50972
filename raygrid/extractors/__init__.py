"""Image feature extractors: images in [0, 1] -> features and category logits.

Importing the package registers the built-in extractors in
:data:`raygrid.registry.EXTRACTORS`.
"""

from raygrid.extractors import (
    cnnf,  # noqa: F401  (registers "cnnf")
    smallcnn,  # noqa: F401  (registers "smallcnn")
    torchvision_backbones,  # noqa: F401  (registers "resnet50", "alexnet")
)

"""Reading network weights from local checkpoint files, safely.

Three formats are recognised and normalised to a plain torchvision state dict
(parameter name -> tensor, e.g. ``conv1.weight``, ``fc.bias``):

* **plain**: what ``torch.save(model.state_dict(), path)`` writes, e.g. the
  torchvision ImageNet files in ``$TORCH_HOME/hub/checkpoints/``.
* **MadryLab robustness** (the ``robustness`` library's adversarially trained
  ImageNet models): a dict with the state dict under ``"model"`` (sometimes
  ``"state_dict"``), keys prefixed ``module.model.``, next to the library's own
  input normaliser (``module.normalizer.*``) and the attacker's copy of the
  model (``module.attacker.*``). Both extras are dropped: raygrid normalises
  inside the extractor with ImageNet's mean/std, which is also what the
  library's ImageNet normaliser holds (a different one is logged as a warning).
* **free adversarial training** (Shafahi et al.'s release): a dict with the
  state dict under ``"state_dict"``, keys prefixed ``module.`` (saved from
  ``nn.DataParallel``).

Files are read with ``torch.load(path, map_location="cpu", weights_only=True)``:
raygrid never unpickles arbitrary code, so a checkpoint that holds pickled
Python objects (a whole ``nn.Module``, an ``argparse.Namespace``) is refused
with instructions to re-save its weights. Numpy scalars and arrays, which
training scripts often store next to the weights (e.g. a best accuracy), are
allowed: rebuilding them runs no user code.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raygrid.errors import DataError
from raygrid.extractors.base import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

MODEL_PREFIXES: tuple[str, ...] = ("module.model.", "model.", "module.")
"""Key prefixes stripped when every (non-auxiliary) key has them, tried in order:
MadryLab robustness under ``nn.DataParallel``, robustness without it, free
adversarial training / any ``nn.DataParallel`` checkpoint."""

AUXILIARY_PREFIXES: tuple[str, ...] = ("module.normalizer.", "module.attacker.", "normalizer.", "attacker.")
"""Keys of the robustness library's wrapper (input normaliser, attacker's model copy), not of the network."""

STATE_DICT_KEYS: tuple[str, ...] = ("state_dict", "model")
"""Keys under which training checkpoints keep the network's state dict."""

FORMATS_HELP = (
    "a plain state dict (torch.save(model.state_dict(), path)), a MadryLab robustness checkpoint "
    "('model' with 'module.model.' keys) or a free adversarial training checkpoint "
    "('state_dict' with 'module.' keys)"
)
"""The accepted formats, as error messages name them."""

_MAX_KEYS_SHOWN = 5


def load_state_dict_file(
    path: str | Path, *, model_prefixes: Sequence[str] = MODEL_PREFIXES
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return the network's plain state dict, on CPU.

    Args:
        path: Local checkpoint file in one of the formats of this module.
        model_prefixes: Key prefixes to strip, tried in order; a prefix is
            stripped only when every key (after dropping the robustness
            library's ``normalizer``/``attacker`` keys) starts with it.

    Returns:
        Parameter and buffer name -> tensor, with torchvision's key names when the
        file held a torchvision network.

    Raises:
        DataError: The file is missing, is not a torch checkpoint (truncated or
            corrupt), needs ``weights_only=False`` to load (pickled Python
            objects), or holds no state dict. The message names the path and the fix.
    """
    path = Path(path).expanduser()
    checkpoint = _safe_load(path)
    state_dict, container = _find_state_dict(checkpoint, path)
    normalized, fmt = normalize_state_dict(state_dict, model_prefixes=model_prefixes)
    log.info(
        "read %d tensors from %s (%s%s)", len(normalized), path, fmt, f", under {container!r}" if container else ""
    )
    return normalized


def normalize_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, model_prefixes: Sequence[str] = MODEL_PREFIXES
) -> tuple[dict[str, torch.Tensor], str]:
    """Strip a wrapper's key prefix and drop the robustness library's extra keys.

    Args:
        state_dict: Name -> tensor, as stored.
        model_prefixes: See :func:`load_state_dict_file`.

    Returns:
        ``(state_dict, format)``: the normalised copy and a description of the
        detected format (``"plain"`` or ``"prefix 'module.model.'"`` etc.).
    """
    for prefix in model_prefixes:
        kept = {k: v for k, v in state_dict.items() if not k.startswith(AUXILIARY_PREFIXES)}
        if kept and all(k.startswith(prefix) for k in kept):
            dropped = len(state_dict) - len(kept)
            _warn_on_foreign_normalizer(state_dict)
            fmt = f"prefix {prefix!r}" + (f", {dropped} normaliser/attacker keys dropped" if dropped else "")
            return {k[len(prefix) :]: v for k, v in kept.items()}, fmt
    return dict(state_dict), "plain"


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str, expected: str = "") -> None:
    """Load ``state_dict`` into ``model`` strictly, or explain the mismatch in one line.

    Args:
        model: The network (e.g. a torchvision ResNet50), whose own keys are expected.
        state_dict: Normalised state dict, e.g. from :func:`load_state_dict_file`.
        what: What the weights are, for the message, e.g. ``"weights file /x/rn50.pt"``.
        expected: What would fit, for the message; by default a few of the
            model's own keys and the accepted file formats.

    Raises:
        DataError: Keys are missing or unexpected, or shapes differ; the message
            lists them (truncated) and says which format is expected.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if missing or unexpected or mismatched or not_tensors:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_shorten(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_shorten(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches, file vs model ({len(mismatched)}): {_shorten(mismatched)}")
        if not_tensors:
            problems.append(f"values that are not tensors ({len(not_tensors)}): {_shorten(not_tensors)}")
        wanted = expected or (
            f"a {type(model).__name__} state dict with keys like {_shorten(list(own), limit=3)}, as {FORMATS_HELP}"
        )
        raise DataError(f"{what} do not fit the network: {'; '.join(problems)}; expected {wanted}")
    model.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------- helpers


def _safe_globals() -> list[Any]:
    """Numpy types whose unpickling runs no user code, under their numpy 1 and numpy 2 paths."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    dtypes = [
        getattr(np.dtypes, n) for n in getattr(np.dtypes, "__all__", ()) if isinstance(getattr(np.dtypes, n), type)
    ]
    allowed: list[Any] = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]
    for name in ("scalar", "_reconstruct"):
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed.append((getattr(multiarray, name), f"{module}.{name}"))
    return allowed


def _safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line DataError."""
    if not path.exists():
        raise DataError(
            f"weights file {str(path)!r} does not exist; check weights_path "
            "(use an absolute path that every machine running trials can read)"
        )
    if not path.is_file():
        raise DataError(f"weights file {str(path)!r} is not a file; give the path of the checkpoint file itself")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path, str(exc))
        if unsafe:
            raise DataError(
                f"weights file {str(path)!r} holds pickled Python objects ({_shorten(unsafe)}) and raygrid loads "
                "checkpoints with torch.load(weights_only=True), never unpickling code; in a Python session "
                "you trust, load it with weights_only=False and re-save only the weights: "
                "torch.save(model.state_dict(), 'weights.pt')"
            ) from None
        raise _corrupt(path, exc) from None
    except PermissionError as exc:
        raise DataError(f"weights file {str(path)!r} cannot be read ({exc}); check its permissions") from None
    except Exception as exc:  # noqa: BLE001  (torch reports corruption as RuntimeError, EOFError, KeyError, ...)
        raise _corrupt(path, exc) from None


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """Globals the checkpoint needs beyond what weights-only loading allows; empty if it is simply corrupt."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001  (legacy, non-zip files: fall back to the error text)
        found = []
    if not found:
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", message)
        found += re.findall(r"Can only build .*? but got <class '([^']+)'>", message)
    allowed = {a[1] if isinstance(a, tuple) else f"{a.__module__}.{a.__qualname__}" for a in _safe_globals()}
    return [g for g in found if g not in allowed]


def _corrupt(path: Path, exc: BaseException) -> DataError:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return DataError(
        f"weights file {str(path)!r} is not a readable torch checkpoint ({reason}); it is truncated, corrupt "
        "or not written by torch.save: download or copy it again"
    )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(checkpoint: Any, path: Path) -> tuple[Mapping[str, torch.Tensor], str | None]:
    """The state dict itself or the one under a known key of a training checkpoint."""
    if _is_state_dict(checkpoint):
        return checkpoint, None
    if isinstance(checkpoint, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(checkpoint.get(key)):
                return checkpoint[key], key
        found = f"a dict with keys {_shorten([str(k) for k in checkpoint])}"
    else:
        found = f"a {type(checkpoint).__name__}"
    raise DataError(f"weights file {str(path)!r} holds {found}, not a state dict; give {FORMATS_HELP}")


def _warn_on_foreign_normalizer(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Warn when a robustness checkpoint's own normaliser is not ImageNet's (raygrid applies ImageNet's)."""
    for prefix in ("module.normalizer.", "normalizer."):
        mean, std = state_dict.get(prefix + "new_mean"), state_dict.get(prefix + "new_std")
        if mean is None or std is None or mean.numel() != 3 or std.numel() != 3:
            continue
        ours_mean, ours_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if not (
            torch.allclose(mean.flatten().float(), ours_mean, atol=1e-3)
            and torch.allclose(std.flatten().float(), ours_std, atol=1e-3)
        ):
            log.warning(
                "the checkpoint was trained with its own input normaliser (mean %s, std %s); raygrid normalises "
                "with ImageNet's (mean %s, std %s), so its accuracy may differ",
                mean.flatten().tolist(),
                std.flatten().tolist(),
                IMAGENET_MEAN,
                IMAGENET_STD,
            )


def _shorten(items: Sequence[str], limit: int = _MAX_KEYS_SHOWN) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")

"""Checkpoints that never unpickle: safetensors tensors + a JSON sidecar, committed atomically.

A checkpoint named ``run/best`` is a sidecar and the tensor files it names:

- ``run/best.json``: the sidecar: format version, the taxonomy (its JSON and fingerprint), the
  model/run config, metrics, epoch, the non-tensor part of the training state (scheduler, optimizer
  hyper-parameters, Python/NumPy RNG) and the file name and SHA-256 of each tensor file;
- ``run/best.<sha12>.safetensors``: the model's ``state_dict`` (plain keys, loadable by any
  safetensors reader; the loss module's constant buffers are left out);
- ``run/best.<sha12>.state.safetensors`` (optional): the tensors of the training state (optimizer
  moments, RNG states...).

``<sha12>`` is the first 12 hex digits of the file's SHA-256, so a save never overwrites a tensor
file that the current sidecar names. Find the files with :func:`checkpoint_paths`.

A save writes each tensor file to a temporary name, ``fsync``-s it and renames it to its hashed
name; then it replaces the sidecar (``os.replace``): that is the single commit step. Only after it
are the tensor files of the previous sidecar deleted. So a crash or a full disk at any point leaves
either the previous checkpoint or the new one, whole (the hashes are checked on load). A hard kill
(SIGKILL, the OOM killer, a preempted node) during a save can leave its temporary files behind
(``run/.best.<8 random>.tmp``, ``run/.best.json.<8 random>.tmp``): the next save of that checkpoint
removes them, and the tensor files no sidecar names. One process saves a given checkpoint at a time.
Checkpoints of the earlier layout (``run/best.safetensors``, ``run/best.state.safetensors``, whose
sidecar names them) still load, and the next save over them removes those files.
:func:`load_checkpoint` refuses a checkpoint whose taxonomy fingerprint differs from the taxonomy
you give it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hiercls import Taxonomy

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "checkpoint_paths",
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "model_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "hiercls-leukemia-checkpoint"
VERSION = 2  # 2: tensor files named by their hash (version 1: NAME.safetensors)
_HASH_CHARS = 12
_HASH_SUFFIX = re.compile(rf"\.[0-9a-f]{{{_HASH_CHARS}}}$")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, of another format, or for another taxonomy."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read.

    Attributes:
        path: the sidecar (``.json``).
        taxonomy: the taxonomy the model was trained on.
        config: the run's config (``config["model"]`` rebuilds the model).
        metrics: metrics recorded with it (e.g. validation metrics of that epoch).
        epoch: the epoch that had just finished (0-based), or None.
        state: the training state passed as ``state=`` / optimizer / scheduler / rng, decoded.
        weights: the model's tensors.
    """

    path: Path
    taxonomy: Taxonomy
    config: dict[str, Any]
    metrics: dict[str, Any]
    epoch: int | None
    state: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict)


def _split(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """``(folder, name)`` of the checkpoint ``path``: ``run/best``, ``run/best.json``, one of its tensor files, or
    the run folder ``run`` (its ``best``, as the command lines read it; the not-found error offered it)."""
    path = Path(path)
    if path.is_dir() and (path / "best.json").is_file():
        return path, "best"
    name = path.name
    for suffix in (".state.safetensors", ".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            if suffix != ".json":  # run/best.<sha12>.safetensors -> run/best
                name = _HASH_SUFFIX.sub("", name)
            break
    return path.parent, name


def _tensor_name(name: str, sha256: str, kind: str) -> str:
    """``NAME.<sha12>.safetensors`` (``kind`` "weights") or ``NAME.<sha12>.state.safetensors`` ("state")."""
    return f"{name}.{sha256[:_HASH_CHARS]}{'.state' if kind == 'state' else ''}.safetensors"


def _named_files(sidecar: Any, sidecar_path: Path) -> dict[str, str]:
    """``{"weights": file name, "state": file name}`` of a parsed sidecar (the entries it has).

    Raises:
        CheckpointError: a ``files`` entry without a plain file name (the tensor files live beside the sidecar).
    """
    files = sidecar.get("files") if isinstance(sidecar, dict) else None
    out: dict[str, str] = {}
    for key, entry in (files or {}).items() if isinstance(files, dict) else ():
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise _damaged(sidecar_path, f"its {key} entry names {name!r}, expected a file name beside the sidecar")
        out[key] = name
    return out


def _named_by(sidecar_path: Path) -> dict[str, str]:
    """:func:`_named_files` of the sidecar on disk; empty when it is missing, not JSON or damaged."""
    try:
        return _named_files(json.loads(sidecar_path.read_text(encoding="utf-8")), sidecar_path)
    except (OSError, ValueError):
        return {}


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``(weights, state, sidecar)`` paths of the checkpoint ``path`` (``run/best``, ``run/best.json``...).

    The single source of truth for where a checkpoint's files are: the tensor files are those its
    sidecar names (``run/best.<sha12>.safetensors``, ``run/best.<sha12>.state.safetensors``; the
    earlier layout's ``run/best.safetensors``...). Without a readable sidecar (not saved yet, or
    damaged: :func:`load_checkpoint` says what is wrong), and for a state the checkpoint does not
    have, the earlier layout's names are returned; check ``.is_file()`` before reading them.
    """
    folder, name = _split(path)
    sidecar_path = folder / f"{name}.json"
    named = _named_by(sidecar_path)
    return (
        folder / named.get("weights", f"{name}.safetensors"),
        folder / named.get("state", f"{name}.state.safetensors"),
        sidecar_path,
    )


def _is_wrapper(model: nn.Module) -> bool:
    """DDP/DataParallel and timm's EMA (``.module``) or ``torch.compile`` (``._orig_mod``): a wrapper around the
    model, not a model whose own submodule happens to be called ``module``."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return True
    kind = type(model)
    return (kind.__module__.startswith("timm.utils.model_ema") and kind.__name__.startswith("ModelEma")) or (
        kind.__name__ == "OptimizedModule" and kind.__module__.startswith("torch._dynamo")
    )


def _unwrap(model: nn.Module) -> nn.Module:
    # by type: a plain model with a submodule named ``module`` lost its other weights when unwrapped by name
    while _is_wrapper(model):
        model = model._orig_mod if type(model).__name__ == "OptimizedModule" else model.module
    return model


def model_state(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The model's tensors to save: ``state_dict`` of the unwrapped model without ``criterion.*``, on CPU.

    ``model`` may also be such a ``state_dict`` already (weights kept aside, e.g. a run's best epoch).
    """
    out = {}
    items = model.items() if isinstance(model, Mapping) else _unwrap(model).state_dict().items()
    for key, value in items:
        if not key.startswith("criterion."):
            out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


# ------------------------------------------------------------- state encoding (no pickle)
def _encode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f"state: cannot store a {type(obj).__name__} without pickle; use tensors, arrays, numbers, strings, "
        "lists, tuples and dicts."
    )


class _DamagedState(ValueError):
    """The sidecar's ``state`` is not what :func:`_encode` writes (``load_checkpoint`` names the file)."""


def _decode(obj: Any, tensors: Mapping[str, Tensor], where: str = "state") -> Any:
    """The inverse of :func:`_encode`; ``where`` locates ``obj`` in the state for messages.

    Raises:
        _DamagedState: a reference to a tensor the state file does not hold, or a malformed entry.
    """
    if isinstance(obj, list):
        return [_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        for tag in ("__tensor__", "__ndarray__"):
            if tag in obj:
                key = obj[tag]
                if not isinstance(key, str) or key not in tensors:
                    raise _DamagedState(f"{where} names the tensor {key!r}, which its state file does not hold")
                return tensors[key] if tag == "__tensor__" else tensors[key].numpy()
        if "__tuple__" in obj:
            if not isinstance(obj["__tuple__"], list):
                raise _DamagedState(f"{where}: a __tuple__ entry that is not a list")
            return tuple(_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj["__tuple__"]))
        if "__items__" in obj:
            pairs = obj["__items__"]
            out = {}
            for i, pair in enumerate(pairs if isinstance(pairs, list) else [None]):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise _DamagedState(f"{where}: an __items__ entry that is not a list of [key, value] pairs")
                key = _decode(pair[0], tensors, f"{where}[{i}].key")
                value = _decode(pair[1], tensors, f"{where}[{key!r}]")
                try:
                    out[key] = value
                except TypeError:  # an unhashable key (a list)
                    raise _DamagedState(f"{where}: the key {key!r} cannot key a dict") from None
            return out
        return {k: _decode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
    return obj


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, when available) RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned.

    CUDA states are restored device by device, as many as both the saved state and this machine have: a
    run saved where more GPUs were visible (``torch.cuda.set_rng_state_all`` raised on the first missing
    device) resumes with a warning, since only those devices' streams continue exactly.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved, present = list(state["cuda"]), torch.cuda.device_count()
        if len(saved) != present:
            logging.getLogger("examples.leukemia.checkpoint").warning(
                "the checkpoint holds the random state of %d CUDA device(s), this process sees %d: the first "
                "%d are restored, so only their random streams continue exactly as in the saved run",
                len(saved),
                present,
                min(len(saved), present),
            )
        for device, rng in enumerate(saved[:present]):
            torch.cuda.set_rng_state(rng, device)


# --------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tmp(folder: Path, prefix: str, write: Callable[[str], None]) -> str:
    """Write through ``write(tmp_path)`` to a new temporary file in ``folder`` and ``fsync`` it (removed on error).

    The file is ``.PREFIX.<8 random>.tmp`` (:func:`tempfile.mkstemp`), the name :func:`_stale_temp_files`
    looks for after a hard kill.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp (and safetensors' writer) leave the file owner-only (0600): give it the permissions of any
        # other file the run writes, so that others who may read the run folder can load the checkpoint
        with contextlib.suppress(OSError):  # (a file system without POSIX modes)
            os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _read_umask() -> int:
    """The process's umask (read by setting it, then restoring it at once: done once, at import, before any
    thread of the run could create a file in between)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _unlink(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through ``write(tmp_path)`` to a temporary file in the same folder, then ``os.replace``."""
    tmp = _write_tmp(path.parent, path.name, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _write_tensor_file(folder: Path, name: str, kind: str, tensors: dict[str, Tensor]) -> tuple[str, str]:
    """Save ``tensors`` under their hashed name (:func:`_tensor_name`); returns ``(file name, sha256)``."""
    tmp = _write_tmp(folder, name, lambda t: save_file(tensors, t, metadata={"format": FORMAT}))
    try:
        sha = _sha256(Path(tmp))
        file = _tensor_name(name, sha, kind)
        os.replace(tmp, folder / file)  # same name <=> same bytes: never changes a file a sidecar names
    except BaseException:
        _unlink(tmp)
        raise
    return file, sha


def _stale_files(folder: Path, name: str, previous: set[str], keep: set[str]) -> list[Path]:
    """Tensor files of checkpoint ``name`` that the new sidecar does not name.

    Those the previous sidecar named and the hashed files a crashed save left behind; only names of
    this checkpoint (``NAME.<sha12>[.state].safetensors``, ``NAME[.state].safetensors``) are considered.
    """
    hashed = re.compile(rf"{re.escape(name)}\.[0-9a-f]{{{_HASH_CHARS}}}(\.state)?\.safetensors")
    legacy = {f"{name}.safetensors", f"{name}.state.safetensors"}
    found = {f for f in previous if f in legacy or hashed.fullmatch(f)}
    with contextlib.suppress(OSError):
        found |= {p.name for p in folder.iterdir() if hashed.fullmatch(p.name)}
    return [folder / f for f in sorted(found - keep)]


_TMP_RANDOM = r"[a-z0-9_]{8}"  # the random part of tempfile.mkstemp's names (tests/test_example_checkpoint.py)


def _stale_temp_files(folder: Path, name: str) -> list[Path]:
    """The temporary files an interrupted save of checkpoint ``name`` left in ``folder``.

    Only the names :func:`_write_tmp` gives this checkpoint's files: ``.NAME.<8 random>.tmp`` (its tensor
    files) and ``.NAME.json.<8 random>.tmp`` (its sidecar); another checkpoint's (``.last...`` beside
    ``best``) and any other file are never matched.
    """
    temp = re.compile(rf"\.{re.escape(name)}(\.json)?\.{_TMP_RANDOM}\.tmp")
    with contextlib.suppress(OSError):
        return sorted(p for p in folder.iterdir() if temp.fullmatch(p.name) and not p.is_dir())
    return []


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, Tensor],
    taxonomy: Taxonomy,
    *,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    epoch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    state: Mapping[str, Any] | None = None,
    rng: bool = False,
) -> Path:
    """Write a checkpoint atomically (see the module docstring); returns the sidecar's path.

    After the commit it deletes what earlier saves of this checkpoint left: the tensor files the
    previous sidecar named, and the tensor and temporary files of a save that was killed.

    Args:
        path: ``run/best`` (suffixes ``.json``/``.safetensors`` are accepted and dropped).
        model: the model (DDP- or ``torch.compile``-wrapped is fine), or its ``state_dict``.
        taxonomy: its taxonomy (stored as JSON with its fingerprint).
        config: JSON-able run config.
        metrics: JSON-able metrics.
        epoch: the epoch just finished.
        optimizer, scheduler: their ``state_dict()`` is stored (tensors in safetensors, the rest in JSON).
        state: any extra training state made of tensors, arrays, numbers, strings, lists, tuples, dicts.
        rng: also store the RNG states (:func:`get_rng_state`) for an exact resume.

    Raises:
        CheckpointError: ``state`` holds something that cannot be stored without pickle.
    """
    folder, name = _split(path)
    sidecar_path = folder / f"{name}.json"
    folder.mkdir(parents=True, exist_ok=True)
    train_state: dict[str, Any] = dict(state or {})
    if optimizer is not None:
        train_state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        train_state["scheduler"] = scheduler.state_dict()
    if rng:
        train_state["rng"] = get_rng_state()
    tensors: dict[str, Tensor] = {}
    encoded_state = _encode(train_state, tensors)
    json.dumps(encoded_state)  # fail before writing anything
    previous = set(_named_by(sidecar_path).values())  # never touched before the commit, deleted after it
    files: dict[str, dict[str, str]] = {}
    try:
        for kind, content in (("weights", model_state(model)), ("state", tensors)):
            if kind == "weights" or content:
                file, sha = _write_tensor_file(folder, name, kind, content)
                files[kind] = {"file": file, "sha256": sha}
        sidecar = {
            "format": FORMAT,
            "version": VERSION,
            "epoch": epoch,
            "taxonomy_fingerprint": taxonomy.fingerprint,
            "taxonomy": json.loads(taxonomy.to_json()),
            "config": dict(config or {}),
            "metrics": dict(metrics or {}),
            "files": files,
            "state": encoded_state,
        }
        text = json.dumps(sidecar, indent=1, default=_json_default)

        def write_json(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")

        _fsync_dir(folder)  # the tensor files' names are durable before the sidecar names them
        _atomic_write(sidecar_path, write_json)  # the commit
    except BaseException:  # the previous checkpoint stays as it was; drop what this save added
        current = set(_named_by(sidecar_path).values())  # an interrupt right after the commit: keep what it names
        for entry in files.values():
            if entry["file"] not in previous | current:
                _unlink(folder / entry["file"])
        raise
    _fsync_dir(folder)
    for stale in _stale_files(folder, name, previous, {entry["file"] for entry in files.values()}):
        _unlink(stale)
    for stale in _stale_temp_files(folder, name):  # this save's own are all renamed by now
        _unlink(stale)
    return sidecar_path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def load_weights(model: nn.Module, weights: Mapping[str, Tensor]) -> None:
    """Load saved weights (:func:`model_state`) into a model, strictly except for ``criterion.*`` buffers.

    The counterpart of :func:`model_state`, e.g. for a second copy of the weights (train's EMA).

    Raises:
        CheckpointError: weights missing, unexpected or of another shape.
    """
    try:
        missing, unexpected = _unwrap(model).load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(
            f"model: the checkpoint's weights do not fit this model ({str(err).splitlines()[-1].strip()}); "
            "build it with the checkpoint's config (config['model'])."
        ) from err
    missing = [k for k in missing if not k.startswith("criterion.")]
    if missing or unexpected:
        raise CheckpointError(
            f"model: the checkpoint's weights do not fit this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); build it with the checkpoint's config (config['model'])."
        )


class _MissingFileError(CheckpointError):
    """A tensor file the sidecar names is not there."""


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _json_type(value: Any) -> str:
    """``value``'s JSON type, as a message names it (``null``, ``a string``...)."""
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _check_fits(model: nn.Module, sidecar: Mapping[str, Any], stored: Taxonomy, sidecar_path: Path) -> None:
    """Refuse a checkpoint for another taxonomy, method or head than ``model``'s own (when it has them).

    The weights alone can fit: a per-level model's classifiers have the same shapes on any tree with the
    same number of nodes per level, and a level head's logits those of a sigmoid head, read as another
    probability model.
    """
    inner = _unwrap(model)
    own = getattr(inner, "taxonomy", None)
    if isinstance(own, Taxonomy) and own.fingerprint != stored.fingerprint:
        raise CheckpointError(
            f"model: built on a taxonomy (fingerprint {own.fingerprint[:12]}, {own.num_nodes} nodes, root "
            f"{own.root!r}) that is not {sidecar_path.name}'s (fingerprint {stored.fingerprint[:12]}, "
            f"{stored.num_nodes} nodes, root {stored.root!r}). Build the model on the checkpoint's taxonomy "
            "(load_model does it from the checkpoint alone), or load a checkpoint trained on this one."
        )
    ours = getattr(inner, "config", None)
    config = sidecar.get("config")
    theirs = config.get("model") if isinstance(config, Mapping) else None
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        diff = [k for k in ("method", "head") if ours.get(k) and theirs.get(k) and ours[k] != theirs[k]]
        if diff:
            raise CheckpointError(
                f"model: {', '.join(f'{k} {ours[k]!r}' for k in diff)}, but {sidecar_path.name} was trained as "
                f"{', '.join(f'{k} {theirs[k]!r}' for k in diff)}: its logits would be read as another model. "
                "Build the model from the checkpoint (load_model), or pass it as --init-checkpoint, which "
                "takes what fits (the backbone) and leaves the rest as initialised."
            )


def _damaged(sidecar_path: Path, what: str) -> CheckpointError:
    """The error for a sidecar that does not hold what :func:`save_checkpoint` writes."""
    return CheckpointError(
        f"{sidecar_path}: {what}; the checkpoint is damaged (edited by hand, cut short, or written by other "
        "code). Load the run's other checkpoint (RUN/best or RUN/last), or retrain."
    )


def _run_folder_hint(sidecar_path: Path) -> str:
    """``"; here: FOLDER (its best checkpoint)..."`` when the file given lies in a run folder (another of its
    files was given, e.g. ``RUN/config.json`` or ``RUN/log.csv``), else ``""``."""
    folder = sidecar_path.parent
    kept = [name for name in ("best", "last") if (folder / f"{name}.json").is_file()]
    if not kept or sidecar_path.name in {f"{name}.json" for name in kept}:
        return ""
    return f"; here: {folder} (the run folder), or " + " or ".join(str(folder / name) for name in kept)


def _not_a_sidecar(sidecar_path: Path, why: str) -> CheckpointError:
    """The error for a file given as a checkpoint that is not one (a run's config.json, a binary file...)."""
    return CheckpointError(
        f"path: {sidecar_path} is not a checkpoint: not a {FORMAT} sidecar ({why}). Give a run's checkpoint as "
        "RUN/best (or RUN/best.json, RUN/last), or the run folder RUN itself" + _run_folder_hint(sidecar_path) + "."
    )


def _read_sidecar(sidecar_path: Path, taxonomy: Taxonomy | None) -> tuple[str, dict[str, Any], Taxonomy]:
    """``(text, parsed sidecar, stored taxonomy)``, checked (format, version, the entries load reads,
    taxonomy fingerprint)."""
    try:
        text = _text_or_none(sidecar_path)
    except UnicodeDecodeError:  # a binary file named *.json
        raise _not_a_sidecar(sidecar_path, "not UTF-8 text") from None
    if text is None:
        raise CheckpointError(
            f"path: no checkpoint sidecar {sidecar_path} (a checkpoint is NAME.json + the NAME.*.safetensors "
            "files it names, as written by save_checkpoint). Give a run's checkpoint as RUN/best (or "
            "RUN/best.json, RUN/last), or the run folder RUN itself" + _run_folder_hint(sidecar_path) + "."
        )
    try:
        sidecar = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{sidecar_path} is not valid JSON ({err}); the checkpoint is damaged.") from err
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        found = sidecar.get("format") if isinstance(sidecar, dict) else type(sidecar).__name__
        raise _not_a_sidecar(sidecar_path, f"format={found!r}")
    version = sidecar.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise _damaged(
            sidecar_path, f"its version is {version!r}, expected a whole number (this code writes {VERSION})"
        )
    if version > VERSION:
        raise CheckpointError(
            f"{sidecar_path}: version {version} is newer than this code ({VERSION}); update hiercls to read it."
        )
    for key, kinds, expected in (
        ("config", (dict, type(None)), "an object"),
        ("metrics", (dict, type(None)), "an object"),
        ("state", (dict, type(None)), "an object"),
        ("epoch", (int, type(None)), "a whole number or null"),
    ):
        value = sidecar.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise _damaged(sidecar_path, f"its {key!r} is {_json_type(value)}, expected {expected}")
    if not isinstance(sidecar.get("taxonomy"), dict):
        found = "missing" if "taxonomy" not in sidecar else _json_type(sidecar["taxonomy"])
        raise _damaged(sidecar_path, f"its 'taxonomy' is {found}, expected the taxonomy's JSON object")
    fingerprint = sidecar.get("taxonomy_fingerprint")
    if not isinstance(fingerprint, str):
        found = "missing" if "taxonomy_fingerprint" not in sidecar else _json_type(fingerprint)
        raise _damaged(sidecar_path, f"its 'taxonomy_fingerprint' is {found}, expected the taxonomy's fingerprint")
    try:
        stored = Taxonomy.from_json(sidecar["taxonomy"])
    except (ValueError, TypeError, KeyError) as err:  # TaxonomyError is a ValueError
        raise _damaged(sidecar_path, f"its 'taxonomy' is not a valid taxonomy ({err})") from err
    if stored.fingerprint != fingerprint:
        raise _damaged(sidecar_path, "the stored taxonomy does not match its fingerprint")
    if taxonomy is not None and taxonomy.fingerprint != stored.fingerprint:
        ours, theirs = set(taxonomy.nodes), set(stored.nodes)
        diff = sorted(ours ^ theirs)[:6]
        raise CheckpointError(
            f"taxonomy: the checkpoint {sidecar_path.name} was trained on another taxonomy "
            f"(fingerprint {stored.fingerprint[:12]}..., {stored.num_nodes} nodes; yours "
            f"{taxonomy.fingerprint[:12]}..., {taxonomy.num_nodes} nodes"
            + (f"; nodes in only one of them: {diff}" if diff else "; same nodes, different structure or order")
            + "). Use the checkpoint's own taxonomy (Checkpoint.taxonomy; on the command line, the --taxonomy "
            "that its run's config.json names) or retrain."
        )
    return text, sidecar, stored


def _read_tensor_files(
    sidecar: dict[str, Any], sidecar_path: Path, verify: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(weights, state tensors)`` from the files the sidecar names (hashes checked when ``verify``)."""
    named = _named_files(sidecar, sidecar_path)
    if "weights" not in named:
        raise _damaged(sidecar_path, "its 'files' names no weights file")
    out: dict[str, dict[str, Tensor]] = {"weights": {}, "state": {}}
    for key in ("weights", "state"):
        if key not in named:
            continue
        file = sidecar_path.parent / named[key]
        expected = sidecar["files"][key].get("sha256")
        if verify and not isinstance(expected, str):
            raise _damaged(sidecar_path, f"its {key} entry has no 'sha256' to check {file.name} against")
        try:
            if verify and _sha256(file) != expected:
                raise CheckpointError(
                    f"{file}: SHA-256 differs from the sidecar's; the checkpoint is damaged or mixed."
                )
            out[key] = load_file(str(file))
        except FileNotFoundError:
            raise _MissingFileError(f"{sidecar_path}: its {key} file {file} is missing.") from None
    return out["weights"], out["state"]


def match_param_layout(optimizer: torch.optim.Optimizer) -> int:
    """Give every per-parameter state tensor of ``optimizer`` its parameter's strides; returns how many changed.

    safetensors stores tensors contiguous, so after a resume the moments of a ``channels_last`` convolution
    weight come back with other strides than the weight itself. CUDA's fused AdamW refuses that ("params,
    grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout": its fast path compares
    strides), and the foreach path falls back to a slow per-tensor loop. Values are kept exactly; only the
    memory layout changes. State tensors of another shape than their parameter (a scalar ``step``) are left.
    """
    changed = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            slots = optimizer.state.get(param)
            if not slots:
                continue
            for key, value in slots.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
                    changed += 1
    return changed


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    taxonomy: Taxonomy | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = False,
    verify: bool = True,
) -> Checkpoint:
    """Read a checkpoint; optionally load it into a model / optimizer / scheduler and restore the RNG.

    Nothing is unpickled: tensors come from safetensors, everything else from JSON.

    Args:
        path: ``run/best``, ``run/best.json``, one of its tensor files (``run/best.<sha12>.safetensors``), or
            the run folder ``run`` (read as ``run/best``).
        model: load the weights into it (strict: every parameter must be present and match).
        taxonomy: the taxonomy you are going to use; refused if its fingerprint differs.
        optimizer, scheduler: restore their state (saved with the checkpoint).
        restore_rng: restore the RNG states saved with ``rng=True``.
        verify: check the SHA-256 of the tensor files against the sidecar.

    Raises:
        CheckpointError: missing files, another format, damaged files, a taxonomy mismatch, weights that
            do not fit the model, or a state that was not saved.
    """
    folder, base = _split(path)
    sidecar_path = folder / f"{base}.json"
    for attempt in range(3):
        text, sidecar, stored = _read_sidecar(sidecar_path, taxonomy)
        try:
            weights, tensors = _read_tensor_files(sidecar, sidecar_path, verify)
            break
        except _MissingFileError:
            # a save replaced the checkpoint between reading the sidecar and its files: read the new one
            if attempt == 2 or _text_or_none(sidecar_path) in (None, text):
                raise
    try:
        state = _decode(sidecar.get("state") or {}, tensors)
    except _DamagedState as err:
        raise _damaged(sidecar_path, str(err)) from None
    if model is not None:
        _check_fits(model, sidecar, stored, sidecar_path)
        load_weights(model, weights)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None:
            if name not in state:
                raise CheckpointError(f"{name}: the checkpoint {sidecar_path.name} holds no {name} state.")
            obj.load_state_dict(state[name])
            if name == "optimizer":
                match_param_layout(obj)
    if restore_rng:
        if "rng" not in state:
            raise CheckpointError(f"restore_rng: the checkpoint {sidecar_path.name} holds no RNG state.")
        set_rng_state(state["rng"])
    return Checkpoint(
        path=sidecar_path,
        taxonomy=stored,
        config=sidecar.get("config") or {},
        metrics=sidecar.get("metrics") or {},
        epoch=sidecar.get("epoch"),
        state=state,
        weights=weights,
    )


def load_model(
    path: str | os.PathLike[str], *, taxonomy: Taxonomy | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model a checkpoint describes (from ``config["model"]``), load its weights, eval mode.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or no model config in the sidecar.
    """
    from examples.leukemia.models import model_from_config

    ckpt = load_checkpoint(path, taxonomy=taxonomy)
    if "model" not in ckpt.config:
        raise CheckpointError(f"{ckpt.path}: no config['model'] to rebuild the model from.")
    model = model_from_config(ckpt.config["model"], ckpt.taxonomy)
    load_weights(model, ckpt.weights)
    return model.to(device).eval(), ckpt

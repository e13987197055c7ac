"""Saving and loading a fitted ESAD: a state dict and a JSON file, never pickled code.

`weights.pt` holds the tensors (read back with `weights_only=True`), `esad.json` the
parameters, input shape, scaler, threshold, feature names and history. Bytes travel
through `ede.storage`, so a path may be any fsspec URL; a bad file is one error naming it.

A folder is complete or refused, and this module is the one owner of that rule for
every model folder (`ede.export.model_folder` stores its validation rows and provenance
through `save(files=)`). esad.json is written last and records `files`: the sha256
and size of every other file of the folder. The list lives in esad.json rather than
in a manifest of its own because esad.json already is the file written last and the
one every reader opens first; a second marker would be two files that each claim to
close the folder, with a crash possible between them. `load_folder` checks every
listed file before it uses any, so a file changed after saving, or a folder a crash
left half-rewritten (new weights under the old esad.json), is refused with one line
naming the file. A folder whose esad.json lists no hashes (saved before ede recorded
them) is refused too: nothing shows it is whole, and ede has no users yet whose
folders this strands; train or save it again.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ede import __version__
from ede.core.model import EncoderDecoderEncoder
from ede.core.scaling import AffineScaler
from ede.storage import read_bytes, read_json, shown_url, write_bytes_atomic, write_json

WEIGHTS_FILE, CONFIG_FILE = "weights.pt", "esad.json"


def save(det, path: str, files: Mapping[str, bytes] | None = None) -> None:
    """`files`: the folder's other files by name, written before the weights; esad.json,
    last, lists them all with the weights."""
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in det.net_.state_dict().items()}, buf)
    meta = {
        "format": "ede.esad/1",
        "ede_version": __version__,
        "params": det.get_params(),
        "input_shape": list(det.input_shape_),
        "scaler": det.scaler_.to_dict(),
        "threshold": det.threshold_,
        "train_score_quantiles": _listed(getattr(det, "train_score_quantiles_", None)),
        "feature_names": det.input_feature_names(),
        "history": det.history_,
    }
    contents = {**(files or {}), WEIGHTS_FILE: buf.getvalue()}
    base = path.rstrip("/")
    for name, data in contents.items():
        write_bytes_atomic(f"{base}/{name}", data)
    meta["files"] = {name: _entry(data) for name, data in contents.items()}
    write_json(f"{base}/{CONFIG_FILE}", meta)  # last: it closes the folder


def load(cls, path: str, device: str = "cpu"):
    return load_folder(cls, path, device)[0]


def load_folder(cls, path: str, device: str = "cpu") -> tuple[Any, dict[str, bytes]]:
    """The model and the folder's other files (name -> bytes, as `save(files=)` got them),
    every one checked against esad.json before any is used."""
    base = path.rstrip("/")
    config_url, weights_url = f"{base}/{CONFIG_FILE}", f"{base}/{WEIGHTS_FILE}"
    try:
        meta = read_json(config_url)
    except FileNotFoundError as exc:
        raise ValueError(f"no ESAD model at {shown_url(path)}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "ede.esad/1":
        raise ValueError(f"{shown_url(config_url)}: not an ede model (format ede.esad/1)")
    files = _checked_files(base, meta.get("files"))
    raw = files.pop(WEIGHTS_FILE)
    params = _current_params(meta["params"], config_url)
    for key in ("hidden", "conv_channels"):
        params[key] = tuple(params[key])
    det = cls(**{**params, "device": device})
    net = EncoderDecoderEncoder(
        det.net_config(tuple(meta["input_shape"])), share_encoders=params["share_encoders"]
    )
    state = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:  # shapes that do not fit esad.json
        first = str(exc).strip().splitlines()[-1].strip()
        raise ValueError(
            f"{shown_url(weights_url)}: weights do not fit {CONFIG_FILE} ({first})"
        ) from None
    det.net_ = net.to(device).eval()
    det.scaler_ = AffineScaler.from_dict(meta["scaler"])
    det.input_shape_ = tuple(meta["input_shape"])
    det.n_features_in_ = int(np.prod(det.input_shape_))
    det.threshold_ = float(meta["threshold"])
    if meta.get("train_score_quantiles"):  # models saved before ede recorded them lack it
        det.train_score_quantiles_ = np.asarray(meta["train_score_quantiles"], np.float64)
    det.history_ = meta["history"]
    if meta.get("feature_names") and len(det.input_shape_) == 1:
        det.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    return det, files


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _checked_files(base: str, listed: Any) -> dict[str, bytes]:
    if not isinstance(listed, dict) or WEIGHTS_FILE not in listed:
        raise ValueError(
            f"{shown_url(base)}/{CONFIG_FILE}: lists no file hashes (saved before ede "
            "recorded them), so nothing shows the folder is whole; train or save it again"
        )
    return {name: _checked(f"{base}/{name}", entry) for name, entry in listed.items()}


def _checked(url: str, entry: Any) -> bytes:
    try:
        data = read_bytes(url)
    except FileNotFoundError:
        raise ValueError(
            f"{shown_url(url)}: listed in {CONFIG_FILE} but missing (removed or half-written)"
        ) from None
    if _entry(data) != entry:
        raise ValueError(
            f"{shown_url(url)}: sha256 does not match {CONFIG_FILE} (changed or half-written)"
        )
    return data


def _listed(values) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


# Parameters ede once had, with the value that matches what it does now: a model saved
# with that value loads as it was trained; any other value cannot be reproduced.
RETIRED_PARAMS = {"lr_schedule": "constant", "labelled_share": None}


def _current_params(params: dict, where: str) -> dict:
    params = dict(params)
    for name, same in RETIRED_PARAMS.items():
        if name in params and params.pop(name) != same:
            raise ValueError(f"{shown_url(where)}: trained with {name}, which ede no longer has")
    return params

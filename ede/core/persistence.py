"""Saving and loading a fitted ESAD: a state dict and a JSON file, never pickled code.

`weights.pt` holds the tensors (read back with `weights_only=True`), `esad.json` the
parameters, input shape, scaler, threshold, feature names and history; the JSON is
written last, so its presence marks a complete model. Bytes travel through
`ede.storage`, so a path may be any fsspec URL; a bad file is one error naming it.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from ede import __version__
from ede.core.model import EncoderDecoderEncoder
from ede.core.scaling import AffineScaler
from ede.storage import read_bytes, read_json, shown_url, write_bytes_atomic, write_json

WEIGHTS_FILE, CONFIG_FILE = "weights.pt", "esad.json"


def save(det, path: str) -> None:
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
    base = path.rstrip("/")
    write_bytes_atomic(f"{base}/{WEIGHTS_FILE}", buf.getvalue())
    write_json(f"{base}/{CONFIG_FILE}", meta)  # last: its presence marks a complete model


def load(cls, path: str, device: str = "cpu"):
    base = path.rstrip("/")
    config_url, weights_url = f"{base}/{CONFIG_FILE}", f"{base}/{WEIGHTS_FILE}"
    try:
        meta = read_json(config_url)
        raw = read_bytes(weights_url)
    except FileNotFoundError as exc:
        raise ValueError(f"no ESAD model at {shown_url(path)}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "ede.esad/1":
        raise ValueError(f"{shown_url(config_url)}: not an ede model (format ede.esad/1)")
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
    return det


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

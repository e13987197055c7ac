"""Where a retraining run writes, under one storage root, named in one place.

    prepared/<key>/           content-addressed splits (ede.data.ingest), reused on rerun
    runs/<version>/           one run's scratch: Ray checkpoints, tuning results,
                              model/ (the model folder) and artifact/ (the ONNX export)
    models/<name>/...         published versions and the champion pointer (ede.export.registry)

Runs never share a `runs/<version>/` folder, so a failed or concurrent run cannot
disturb another's files, and only the promotion step writes under `models/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ede.export import registry


def models_url(storage_url: str) -> str:
    return f"{storage_url.rstrip('/')}/models"


@dataclass(frozen=True)
class RunLayout:
    storage: str
    version: str

    @classmethod
    def new(cls, storage_url: str) -> RunLayout:
        """A fresh run under `storage_url`, with a new registry version id."""
        return cls(storage_url.rstrip("/"), registry.new_version())

    @property
    def run_url(self) -> str:
        return f"{self.storage}/runs/{self.version}"

    @property
    def model_url(self) -> str:
        return f"{self.run_url}/model"

    @property
    def artifact_url(self) -> str:
        return f"{self.run_url}/artifact"

    @property
    def models_url(self) -> str:
        return models_url(self.storage)

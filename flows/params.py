"""Parameter types both flows take, so a deployment's `name` or batch size is validated
by one rule whichever flow receives it, and the scoring flow need not import the
retraining flow (and with it Ray and torch) to share them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]

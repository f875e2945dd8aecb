"""The base of the models at a boundary: a key nobody declared is an error, never dropped.

One definition for every package (protocols, edge, collector may all import protocols/).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

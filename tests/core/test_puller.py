"""The weight loader pulls and transforms each payload once per graph."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import pullweights as pw
from pullweights.descriptor import TensorDescriptor
from pullweights.runtime.puller import WeightPuller
from pullweights.weights import Payload, Transform


class CountingSplit(Transform):
    """Splits 8 bytes into two parts and counts its calls."""

    name = "counting-split"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return {"lo": TensorDescriptor("uint8", [4]), "hi": TensorDescriptor("uint8", [4])}

    def apply(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"lo": raw[:4].copy(), "hi": raw[4:].copy()}


async def test_payload_split_across_two_loads_is_transformed_once() -> None:
    transform = CountingSplit()
    payload = Payload(pw.MemorySource(bytes(range(8))), 0, 8, transform=transform)
    loader = WeightPuller(None)
    first = await loader.pull({"lo": payload.ref("lo")})
    second = await loader.pull({"hi": payload.ref("hi"), "lo": payload.ref("lo")})
    assert transform.calls == 1
    np.testing.assert_array_equal(first["lo"], [0, 1, 2, 3])
    np.testing.assert_array_equal(second["hi"], [4, 5, 6, 7])
    assert second["lo"] is first["lo"]

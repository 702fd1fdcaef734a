"""The result of decoding a batch of frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from leireye.record import RECORD_DTYPE, DecodeError


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """`records`: one RECORD_DTYPE row per frame (`seq` 0); `errors`: how many records carry each
    DecodeError kind, indexed by the kind (`errors[DecodeError.TRUNCATED]`)."""

    records: npt.NDArray[np.void]
    errors: npt.NDArray[np.int64]


def count_errors(records: npt.NDArray[np.void]) -> npt.NDArray[np.int64]:
    counts = np.bincount(records["error"], minlength=len(DecodeError))
    return counts.astype(np.int64)


def empty_records(n: int) -> npt.NDArray[np.void]:
    return np.zeros(n, dtype=RECORD_DTYPE)

"""The state of one `describe_frame` walk: the layers found so far and the one being read."""

from __future__ import annotations

from typing import Any, Final

from . import rules

Fields = dict[str, object]
Layer = dict[str, object]

ERROR_TEXT_MAX: Final = 200


class Walk:
    """The layers found so far, and which one is being read (named by a Malformed layer)."""

    def __init__(self, raw: bytes, wire_len: int) -> None:
        self.raw = raw
        self.wire_len = wire_len
        self.layers: list[Layer] = []
        self.current = "link"
        self.at = 0

    def add(self, name: str, at: int, length: int, fields: Fields, cut: bool = False) -> None:
        layer: Layer = {"layer": name, "offset": at, "length": max(0, length), "fields": fields}
        if cut:
            layer["truncated"] = True
        self.layers.append(layer)

    def data(self, at: int, end: int, fields: Fields) -> None:
        """A `Data` layer for the payload bytes `at..end` of the frame (marked cut when the
        ring stored fewer)."""
        if end > at:
            stored = min(end, len(self.raw)) - at
            self.add("Data", at, stored, fields | {"bytes": end - at}, cut=stored < end - at)

    def start(self, name: str, at: int) -> None:
        self.current, self.at = name, at

    def fits(self, name: str, at: int, need: int) -> bool:
        """Whether `need` bytes from `at` are stored; if not, the Truncated layer ends the list."""
        available = len(self.raw) - at
        if available >= need:
            return True
        fields: Fields = {"layer": name, "needed": need, "available": max(0, available)}
        fields["wire_length"] = self.wire_len
        self.add("Truncated", at, available, fields)
        return False

    def head(self, cls: Any, at: int, name: str) -> Any:
        """`cls` read at `at`, or None when its fixed header is cut short."""
        self.start(name, at)
        if not self.fits(name, at, cls.__hdr_len__):
            return None
        return cls(self.raw[at:])

    def malformed(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_MAX]
        fields: Fields = {"layer": self.current, "error": rules.clean(text)}
        self.add("Malformed", self.at, len(self.raw) - self.at, fields)


def named(table: dict[int, str], value: int, key: str) -> Fields:
    """`{key: name}` when `table` names `value`, else nothing (fields hold no None)."""
    return {key: table[value]} if value in table else {}

"""Variants counted by reason with the input lines they came from: what was dropped and why, what was
scored with a clipped window. Every run reports both at the end."""

from __future__ import annotations


class Tally:
    """Per reason, (input line, what was found there) of each variant counted."""

    def __init__(self) -> None:
        self.by_reason: dict[str, list[tuple[int, str]]] = {}

    def add(self, reason: str, line: int, detail: str = "") -> None:
        self.by_reason.setdefault(reason, []).append((line, detail))

    def __len__(self) -> int:
        return sum(len(found) for found in self.by_reason.values())

    def lines(self, reason: str) -> list[int]:
        return [line for line, _ in self.by_reason.get(reason, [])]

    def report(self, shown: int = 10) -> list[str]:
        """One line per reason: the count, the reason, the first `shown` input lines with their details."""
        out = []
        for reason, found in self.by_reason.items():
            listed = ", ".join(f"line {line}" + (f" ({detail})" if detail else "")
                               for line, detail in found[:shown])
            more = f" and {len(found) - shown} more" if len(found) > shown else ""
            out.append(f"{len(found)} {reason}: {listed}{more}")
        return out

"""μ-VLA's curriculum: region–tag first, then + region–phrase, then + image–sentence.

``active(step)`` is a pure function of the step; :meth:`Curriculum.observe` records a switch the
first time a step activates a new set, so a run's log (and a resumed run's, from ``state_dict``)
says when each objective joined.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

STAGES = ("region_tag", "region_phrase", "image_sentence")


@dataclass(frozen=True)
class CurriculumSwitch:
    step: int
    active: tuple[str, ...]
    added: tuple[str, ...]


@dataclass
class Curriculum:
    """Objective ``STAGES[i]`` is active from ``starts[i]`` on; ``starts[0]`` is 0.

    ``region_phrase_at`` / ``image_sentence_at``: the global steps where those objectives join
    (non-decreasing; equal values switch both on at once).
    """

    region_phrase_at: int = 0
    image_sentence_at: int = 0
    log: list[CurriculumSwitch] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.region_phrase_at <= self.image_sentence_at:
            raise ValueError(
                f"curriculum switch points must satisfy 0 <= region_phrase_at ({self.region_phrase_at}) <= image_sentence_at ({self.image_sentence_at})"
            )

    @property
    def starts(self) -> tuple[int, int, int]:
        return (0, self.region_phrase_at, self.image_sentence_at)

    def active(self, step: int) -> set[str]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return {name for name, start in zip(STAGES, self.starts) if step >= start}

    def observe(self, step: int) -> CurriculumSwitch | None:
        """Call once per step: returns (and logs) a switch when ``step`` activates a new set."""
        now = tuple(s for s in STAGES if s in self.active(step))
        before = self.log[-1].active if self.log else ()
        if now == before:
            return None
        sw = CurriculumSwitch(step, now, tuple(s for s in now if s not in before))
        self.log.append(sw)
        return sw

    def state_dict(self) -> dict:
        return {"region_phrase_at": self.region_phrase_at, "image_sentence_at": self.image_sentence_at, "log": [asdict(s) for s in self.log]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Curriculum":
        log = [CurriculumSwitch(int(s["step"]), tuple(s["active"]), tuple(s["added"])) for s in state.get("log", [])]
        return cls(int(state["region_phrase_at"]), int(state["image_sentence_at"]), log)

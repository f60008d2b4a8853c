"""Teachers behind one interface (:class:`Teacher`), by name. All load from local files only."""
from __future__ import annotations

from typing import Any

from pipelines.teachers.base import Teacher, TeacherInput
from pipelines.teachers.hf_grounding_dino import GroundingDinoTeacher
from pipelines.teachers.hf_owlv2 import Owlv2Teacher
from pipelines.teachers.oracle import OracleTeacher
from pipelines.teachers.simulated import SimulatedTeacher
from pipelines.teachers.tag_similarity import TagSimilarityTeacher

REGISTRY: dict[str, type[Teacher]] = {
    TagSimilarityTeacher.name: TagSimilarityTeacher,
    OracleTeacher.name: OracleTeacher,
    SimulatedTeacher.name: SimulatedTeacher,
    GroundingDinoTeacher.name: GroundingDinoTeacher,
    Owlv2Teacher.name: Owlv2Teacher,
}

DEFAULT_TEACHER = TagSimilarityTeacher.name


def build_teacher(name: str, params: dict[str, Any]) -> Teacher:
    if name not in REGISTRY:
        raise ValueError(f"unknown teacher {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**params)


__all__ = ["REGISTRY", "DEFAULT_TEACHER", "Teacher", "TeacherInput", "build_teacher"]

"""ssga data contracts: the only module both the pipelines and the trainer import."""
from schemas.records import (  # noqa: F401
    SCHEMA_VERSION,
    Caption,
    ImageLabels,
    Phrase,
    PhraseRecord,
    RegionRecord,
    TeacherBox,
    TeacherRecord,
)

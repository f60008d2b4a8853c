"""ssga data contracts: the only project package both the pipelines and the trainer import (it imports only ``ssga_io``)."""
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

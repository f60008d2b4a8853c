"""The one warning text for every reader that can unpickle a file (``--allow-pickle``)."""

PICKLE_RISK = "unpickling runs arbitrary code stored in the file; pass --allow-pickle only for files from a trusted source"

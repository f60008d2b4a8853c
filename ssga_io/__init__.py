"""Shared file helpers of both halves (below ``schemas/``, above nothing): ``atomic`` (write-then-rename), ``fs`` (local or Beam filesystem paths), ``security`` (the pickle warning)."""

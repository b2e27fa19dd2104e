"""spotify-ingest: ingest the Spotify artist catalog as fast as the Web API's unknown limit allows.

The public API is re-exported here; everything else is internal and may change.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

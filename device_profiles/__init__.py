"""Device profiles: the declarative files by which a technician adds a device.

`schema.py` holds the models; the YAML files beside it are the library of ready profiles.
"""

from pathlib import Path

LIBRARY = Path(__file__).parent

"""Device profiles: the declarative files by which a technician adds a device.

`schema.py` assembles the format from the models of the installed protocols (each in its
folder under protocols/); the YAML files beside it are the library of ready profiles.
"""

from pathlib import Path

LIBRARY = Path(__file__).parent

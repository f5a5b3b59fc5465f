"""What several test modules share, as plain modules: test modules import from here and never
from each other or from a conftest (fixtures stay in the conftest files)."""

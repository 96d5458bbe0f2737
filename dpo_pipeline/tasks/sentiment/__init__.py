"""Controlled sentiment (DPO paper, section 6.1): review prefixes, a sentiment classifier's P(POSITIVE) as the
reward, the embedded offline default built from the Rotten Tomatoes reviews of a PyPI wheel."""
from . import task  # noqa: F401,E402  - registers the task

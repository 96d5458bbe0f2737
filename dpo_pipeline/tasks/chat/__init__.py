"""Chat preferences: conversational and multi-turn pairs (UltraFeedback-style), evaluated by held-out implicit-reward
accuracy, exact KL and an LLM judge; and the offline chat demo built from the same Rotten Tomatoes reviews."""
from . import task  # noqa: F401,E402  - registers the task

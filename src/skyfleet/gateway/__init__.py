"""The data plane: an OpenAI-compatible gateway in front of every provider (`skyfleet serve`)."""

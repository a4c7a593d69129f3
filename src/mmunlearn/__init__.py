"""mmunlearn: reproducible unlearning of private information in multimodal LLMs."""

__version__ = "0.1.0"

"""conceptspace: concept-space analysis of how generative models learn concepts (Park et al., NeurIPS 2024)."""

__version__ = "0.1.0"

"""tea_med: Training with Explanations Alone (TEA) for chest X-ray classifiers.

Subpackages: ``explain`` (trainable LRP-ε and ablation explainers), ``losses`` (TEA loss and
variants), ``networks`` (LRP-ready classifiers), ``data``, ``engines``, ``evaluation``,
``deploy``. See ``docs/method.md`` for the method and ``docs/architecture.md`` for the layout.
"""

__version__ = "0.1.0"

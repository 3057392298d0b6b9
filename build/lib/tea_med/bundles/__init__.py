"""The MONAI bundles shipped with tea_med (configs and docs; weights are trained, never shipped).

Installed, this folder is the package ``tea_med.bundles``: ``tea-med bundles --copy DEST`` copies
the bundles into a folder of your own, where ``python -m monai.bundle run`` trains and runs them.
"""

"""The DICOM node beside PACS (``tea-med serve``): receive, spool durably, classify, send results back.

Modules: :mod:`~tea_med.node.config` (``node.toml``), :mod:`~tea_med.node.spool` (the durable
spool), :mod:`~tea_med.node.worker` (classification, exactly one result per instance),
:mod:`~tea_med.node.forward` (the outbox to the PACS), :mod:`~tea_med.node.scp` (the Storage SCP).
No training code is imported.
"""

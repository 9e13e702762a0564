"""The leukemia example: hierarchical classification of blood-smear images.

Follows Hamdi et al., "Breaking Down the Hierarchy: A New Approach to Leukemia
Classification" (AMAI 2023, arXiv 2502.10899) on public images (PBC, ALL) or
your own. Modules: ``data`` (scan, check, split, load), ``pack`` (compact
uint8 cache), ``gpu_data`` (batches and augmentation on the GPU), ``synthetic``
(a generated image set for offline runs), ``models``, ``train``, ``evaluate``,
``predict``, ``explain``. Taxonomies: ``taxonomies/{paper,pbc,all4}.json``.
"""

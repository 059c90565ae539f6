"""Zero-shot evaluation suite of the FastSAM paper: BSDS500 edges, COCO/LVIS object proposals and
box-prompted instance segmentation (``fastsam zeroshot edges|proposals|instances``).

One module per task (:mod:`~fastsam.zeroshot.edges`, :mod:`~fastsam.zeroshot.proposals`,
:mod:`~fastsam.zeroshot.instances`), each a function that streams over a dataset with per-image
partial results (:mod:`~fastsam.zeroshot._runner`: resume, limit, torchrun sharding) and writes
``OUT/metrics.json``; :mod:`~fastsam.zeroshot.bsds` is the boundary benchmark,
:mod:`~fastsam.zeroshot.report` the paper's figures. Needs the ``zeroshot`` extra (scipy,
scikit-image, lvis). Nothing is imported here, so ``import fastsam`` stays light.
"""

"""The parents' review page and per-child preference learning.

Reads the decision database (record/) and the policy; writes labels, thumbnails and learnt
rule adjustments under the state directory. The policy package never imports this one: the
Engine applies learnt adjustments by wrapping the profiles it hands to the pipeline.
"""

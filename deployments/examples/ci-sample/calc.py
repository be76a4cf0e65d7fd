"""A tiny calculator: the sample project that deployments/workflows/ci-review.yaml checks.

It has a bug (``mean``) that its tests catch and an unused import that the linter finds,
on purpose.
"""

import os


def add(a, b):
    return a + b


def mean(values):
    return sum(values) / len(values) - 1

"""Task taxonomy: the tree of task profiles, the packaged default, embedding assignment.

Importing this package is cheap: assignment (which loads the sentence encoder on first
use) lives in :mod:`trouter.taxonomy.assign`.
"""

from trouter.taxonomy.model import (
    SEPARATOR,
    Leaf,
    TaskProfile,
    Taxonomy,
    TaxonomyError,
    TaxonomyNode,
)

__all__ = ["SEPARATOR", "Leaf", "TaskProfile", "Taxonomy", "TaxonomyError", "TaxonomyNode"]

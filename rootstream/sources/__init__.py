"""Everything that reads ROOT files, one concern per module (as uproot's ``source/`` keeps
one backend per file):

- :mod:`~rootstream.sources.specs`: file specs (paths, URLs, globs, ``file.root:tree``);
- :mod:`~rootstream.sources.opening`: opening files and trees, closing them;
- :mod:`~rootstream.sources.settings`: the XRootD client's waits and ISA-L for zlib, set once;
- :mod:`~rootstream.sources.measure`: checking expressions, measuring a tree for the plan;
- :mod:`~rootstream.sources.columns`: entries of expressions as numpy columns;
- :mod:`~rootstream.sources.summary`: what ``rootstream inspect`` prints;
- :mod:`~rootstream.sources.failures`: what a damaged or unreachable file raises;
- :mod:`~rootstream.sources.transient`: which failures are worth retrying.

It is the only package of the reading path that imports uproot and awkward
(:mod:`rootstream.synthetic` writes generated samples with them). It hands numpy columns
(see :mod:`rootstream.preprocess`) to the rest of the package. Local paths and URLs
(``root://``, ``http(s)://``, any fsspec URL) take the same path through uproot's fsspec
source.
"""

from __future__ import annotations

from rootstream.chunks import Chunk
from rootstream.sources.columns import probe_columns, read_columns, to_column
from rootstream.sources.failures import DATA_ERRORS, data_errors
from rootstream.sources.measure import branches_read, inspect_source, tree_location
from rootstream.sources.opening import close_tree, is_rntuple, open_file, open_tree, tree_names
from rootstream.sources.settings import XROOTD_CLIENT_SETTINGS
from rootstream.sources.specs import Source, parse_files, split_tree
from rootstream.sources.summary import PERCENTILES, BranchSummary, TreeSummary, summarize_file
from rootstream.sources.transient import is_transient

__all__ = [
    "DATA_ERRORS",
    "PERCENTILES",
    "XROOTD_CLIENT_SETTINGS",
    "BranchSummary",
    "Chunk",
    "Source",
    "TreeSummary",
    "branches_read",
    "close_tree",
    "data_errors",
    "inspect_source",
    "is_rntuple",
    "is_transient",
    "open_file",
    "open_tree",
    "parse_files",
    "probe_columns",
    "read_columns",
    "split_tree",
    "summarize_file",
    "to_column",
    "tree_location",
    "tree_names",
]

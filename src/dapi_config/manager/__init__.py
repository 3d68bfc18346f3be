"""The manager: :class:`ConfigManager`, the one facade over the static config and the state.

- :mod:`.facade` the class itself: opening and closing, chain values, seeds, parameters, the
  plan, the schedule, the audit trail, exports;
- :mod:`.nodes`, :mod:`.recovery`, :mod:`.past`, :mod:`.keys`, :mod:`.predecessor` the parts it
  is made of (the registry; backups and checks; the state at a revision and point-in-time
  recovery; secrets; the predecessor's files in and out);
- :mod:`.opening` the one pipeline every open goes through;
- :mod:`._base` what the parts share.
"""

from dapi_config._validation import INT64_MAX, node_etag, validate_nodes
from dapi_config.manager.facade import ConfigManager
from dapi_config.manager.nodes import MAX_NODE_PAGE, matching, page_of
from dapi_config.manager.predecessor import ROLLBACK_FILENAME
from dapi_config.store.backend import AUDIT_PAGE_MAX

__all__ = [
    "AUDIT_PAGE_MAX",
    "INT64_MAX",
    "MAX_NODE_PAGE",
    "ROLLBACK_FILENAME",
    "ConfigManager",
    "matching",
    "node_etag",
    "page_of",
    "validate_nodes",
]

"""Test-only: load extra capability modules in `tw-mesh join` subprocesses.

Put this directory on PYTHONPATH and list modules in TW_MESH_TEST_EXTRA_SERVICES (comma
separated). A no-op for modules taskworker.node.SERVICE_MODULES already lists.
"""

import os

_extra = [m for m in os.environ.get("TW_MESH_TEST_EXTRA_SERVICES", "").split(",") if m]
if _extra:
    import taskworker.node as _node

    for _m in _extra:
        if _m not in _node.SERVICE_MODULES:
            _node.SERVICE_MODULES = (*_node.SERVICE_MODULES, _m)
